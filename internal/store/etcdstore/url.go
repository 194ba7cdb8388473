package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// URL is a store address as fabricd's --store takes it:
//
//	etcd://HOST:PORT[,HOST:PORT...][/PREFIX]    plaintext
//	etcds://HOST:PORT[,HOST:PORT...][/PREFIX]   TLS
//
// PREFIX (default "fabric") is the key prefix: etcd://a:2379/fabric/prod
// keeps every key under /fabric/prod/.
type URL struct {
	Endpoints []string
	TLS       bool
	Prefix    string // with a leading and a trailing "/"
}

// ParseURL parses an etcd:// or etcds:// store address.
func ParseURL(s string) (URL, error) {
	var u URL
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "etcds://"); !ok {
			return URL{}, fmt.Errorf("%q: want etcd://HOST:PORT[,HOST:PORT...][/PREFIX], or etcds://... for TLS", s)
		}
		u.TLS = true
	}
	hosts, prefix, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return URL{}, fmt.Errorf("%q: no etcd endpoint (HOST:PORT)", s)
	}
	for _, ep := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(ep)
		if err != nil || host == "" {
			return URL{}, fmt.Errorf("%q: endpoint %q: want HOST:PORT", s, ep)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return URL{}, fmt.Errorf("%q: endpoint %q: port must be 1-65535", s, ep)
		}
		u.Endpoints = append(u.Endpoints, ep)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		prefix = strings.Trim(DefaultPrefix, "/")
	}
	if strings.Contains(prefix, "//") || strings.ContainsAny(prefix, " \t\n?#") {
		return URL{}, fmt.Errorf("%q: prefix %q: want path segments like fabric/prod", s, prefix)
	}
	u.Prefix = "/" + prefix + "/"
	return u, nil
}

func (u URL) String() string {
	scheme := "etcd"
	if u.TLS {
		scheme = "etcds"
	}
	return scheme + "://" + strings.Join(u.Endpoints, ",") + strings.TrimSuffix(u.Prefix, "/")
}

// TLSFiles are the PEM files of fabricd's --etcd-cacert, --etcd-cert and
// --etcd-key.
type TLSFiles struct {
	// CACert verifies the members' certificates ("": the system's roots).
	CACert string
	// Cert and Key, both or neither, are the client certificate.
	Cert, Key string
}

// IsZero reports whether no file is given.
func (f TLSFiles) IsZero() bool { return f == TLSFiles{} }

// Config loads the files into a client TLS configuration.
func (f TLSFiles) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CACert != "" {
		pem, err := os.ReadFile(f.CACert)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-cacert %s: no PEM certificate in it", f.CACert)
		}
	}
	switch {
	case f.Cert != "" && f.Key != "":
		if err := checkKeyMode(f.Key); err != nil {
			return nil, err
		}
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert %s, --etcd-key %s: %w", f.Cert, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.Cert != "" || f.Key != "":
		return nil, errors.New("--etcd-cert and --etcd-key go together: give both or neither")
	}
	return cfg, nil
}

// checkKeyMode refuses a client key file that group or others may read.
func checkKeyMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("--etcd-key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("--etcd-key %s has mode %04o: the client's private key must not be readable by group or others (chmod 600 %s)", path, perm, path)
	}
	return nil
}

// Options returns the options of a store at u, with the TLS files (which
// only an etcds:// address takes).
func (u URL) Options(files TLSFiles) (Options, error) {
	opts := Options{Endpoints: u.Endpoints, Prefix: u.Prefix}
	if !u.TLS {
		if !files.IsZero() {
			return Options{}, fmt.Errorf("store %s is plaintext but TLS files are given: use etcds:// for TLS", u)
		}
		return opts, nil
	}
	var err error
	opts.TLS, err = files.Config()
	return opts, err
}
