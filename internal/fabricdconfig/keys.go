package fabricdconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/fabricmesh/fabric/internal/ifname"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
)

// Settings are fabricd's settings, resolved from the defaults, the config
// file and the flags.
type Settings struct {
	Listen           netip.AddrPort
	BootstrapKeyFile string
	StateDir         string
	Name             string
	Horde            string
	WGPort           int
	WGInterface      string
	LogLevel         slog.Level
	NoPastiche       bool
	SSHUsersRoot     string
	// Store is "bolt" or an etcd store's address (etcdstore.ParseURL).
	Store                         string
	EtcdCACert, EtcdCert, EtcdKey string
}

// Type is the YAML type a key's value must have.
type Type string

// The key types.
const (
	String  Type = "string"
	Integer Type = "integer"
	Boolean Type = "boolean"
)

// Key is one setting. Its name is both its key in the config file and its
// fabricd flag (--Name).
type Key struct {
	Name string
	Type Type
	// Default is the value a missing key takes, as text; "" if the key is
	// Required or its default is computed (DefaultDoc says how).
	Default    string
	DefaultDoc string
	Required   bool
	// Usage is the flag's one-line help.
	Usage string
	// Doc says more, for docs/config.md and the default config file.
	Doc string
	// Example is a value for the default config file's commented-out line.
	Example string
	// Live keys take effect on SIGHUP; changing the others needs a restart.
	Live bool

	// parse checks text and stores it in s; its error names neither the
	// key nor the file.
	parse func(s *Settings, text string) error
	// get returns the key's value in s as text (the form parse reads).
	get func(s *Settings) string
	// defaultFunc computes the default of a key with a DefaultDoc.
	defaultFunc func() (string, error)
}

// DefaultText is how the documentation states the key's default.
func (k *Key) DefaultText() string {
	switch {
	case k.Required:
		return "required"
	case k.DefaultDoc != "":
		return k.DefaultDoc
	case k.Default == "":
		return `"" (none)`
	}
	return k.Default
}

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

const nameRule = "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"

// keys lists every key, in the order of the documentation and the default
// config file.
var keys = []*Key{
	{
		Name: "listen", Type: String, Required: true, Example: "198.51.100.10:7443",
		Usage: "pubapi endpoint IP:PORT; its IP is the peer's public IP",
		Doc: `The pubapi endpoint, IP:PORT (TCP): activation and admin commands arrive
here. Its IP is also the peer's public IP, the WireGuard endpoint every
other peer sends to, so it must be the address they reach this machine at.
A specific IP is needed (not 0.0.0.0). Quote an IPv6 endpoint:
"[2001:db8::10]:7443".`,
		parse: func(s *Settings, text string) error {
			ap, err := netip.ParseAddrPort(text)
			if err != nil {
				return fmt.Errorf("%q: want IP:PORT, e.g. 198.51.100.10:7443", text)
			}
			if ap.Addr().IsUnspecified() || ap.Port() == 0 {
				return fmt.Errorf("%q: needs a specific IP and port; the IP is the peer's public endpoint", text)
			}
			s.Listen = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			return nil
		},
		get: func(s *Settings) string {
			if !s.Listen.IsValid() {
				return ""
			}
			return s.Listen.String()
		},
	},
	{
		Name: "bootstrap-key-file", Type: String, Default: "/etc/fabric/bootstrap.key",
		Usage: "file holding the cluster bootstrap key (from 'fabric key')",
		Doc: `The file holding the cluster's bootstrap key, made with 'fabric key'. Every
fabricd of a cluster has the same key. The file must not be readable by
group or others (mode 0600 or 0400).`,
		parse: func(s *Settings, text string) error {
			if text == "" {
				return errors.New("empty path")
			}
			s.BootstrapKeyFile = text
			return nil
		},
		get: func(s *Settings) string { return s.BootstrapKeyFile },
	},
	{
		Name: "state-dir", Type: String, Default: "/var/lib/fabric",
		Usage: "directory of the peer's identity and state (created 0700)",
		Doc: `The directory of the peer's identity (its keys and TLS certificate) and of
its store. Created mode 0700 if missing. Keep it across reboots: a peer
that loses it must be activated again.`,
		parse: func(s *Settings, text string) error {
			if text == "" {
				return errors.New("empty path")
			}
			s.StateDir = text
			return nil
		},
		get: func(s *Settings) string { return s.StateDir },
	},
	{
		Name: "name", Type: String, DefaultDoc: "the host name's first label, lowercased", Example: "node1",
		Usage: "peer name, unique in the cluster",
		Doc: `The peer's name, unique in the cluster: 1-63 lowercase letters, digits
and '-', starting and ending with a letter or digit.`,
		defaultFunc: hostLabel,
		parse: func(s *Settings, text string) error {
			if !namePattern.MatchString(text) {
				return fmt.Errorf("%q: %s", text, nameRule)
			}
			s.Name = text
			return nil
		},
		get: func(s *Settings) string { return s.Name },
	},
	{
		Name: "horde", Type: String, Default: "sharks", Example: "jets",
		Usage: "horde (group of services) the peer belongs to",
		Doc: `The horde the peer belongs to: a group of peers whose services the
connectivity rules can let reach each other. Same form as name.`,
		parse: func(s *Settings, text string) error {
			if !namePattern.MatchString(text) {
				return fmt.Errorf("%q: %s", text, nameRule)
			}
			s.Horde = text
			return nil
		},
		get: func(s *Settings) string { return s.Horde },
	},
	{
		Name: "wg-port", Type: Integer, Default: "51820",
		Usage: "WireGuard UDP port",
		Doc:   `The WireGuard UDP port, on the listen IP. 1-65535.`,
		parse: func(s *Settings, text string) error {
			n, err := strconv.Atoi(text)
			if err != nil {
				return fmt.Errorf("%q: want a port number 1-65535", text)
			}
			if n < 1 || n > 65535 {
				return fmt.Errorf("%d: must be 1-65535", n)
			}
			s.WGPort = n
			return nil
		},
		get: func(s *Settings) string { return strconv.Itoa(s.WGPort) },
	},
	{
		Name: "wg-interface", Type: String, Default: "fabric0",
		Usage: "WireGuard interface name",
		Doc: `The name of the WireGuard interface fabricd creates (kernel WireGuard if
the kernel has it, else wireguard-go in fabricd on a TUN device of that
name). At most 15 bytes.`,
		parse: func(s *Settings, text string) error {
			if err := ifname.Validate(text); err != nil {
				return err
			}
			s.WGInterface = text
			return nil
		},
		get: func(s *Settings) string { return s.WGInterface },
	},
	{
		Name: "log-level", Type: String, Default: "info", Example: "debug", Live: true,
		Usage: "debug, info, warn or error",
		Doc: `The least severe log level written: debug, info, warn or error. fabricd
logs to stderr (the journal, under systemd). A SIGHUP applies a change.`,
		parse: func(s *Settings, text string) error {
			l, ok := logLevels[strings.ToLower(text)]
			if !ok {
				return fmt.Errorf("%q: want debug, info, warn or error", text)
			}
			s.LogLevel = l
			return nil
		},
		get: func(s *Settings) string { return strings.ToLower(s.LogLevel.String()) },
	},
	{
		Name: "no-pastiche", Type: Boolean, Default: "false", Example: "true",
		Usage: "do not run the pastiche demo service",
		Doc:   `true: do not run pastiche, the demo file-transfer service.`,
		parse: func(s *Settings, text string) error {
			b, err := strconv.ParseBool(text)
			if err != nil {
				return fmt.Errorf("%q: want true or false", text)
			}
			s.NoPastiche = b
			return nil
		},
		get: func(s *Settings) string { return strconv.FormatBool(s.NoPastiche) },
	},
	{
		Name: "ssh-users-root", Type: String, Default: "/",
		Usage: "root directory of the SSH users' accounts (etc/passwd, homes): / is the machine's; another is for tests and containers",
		Doc: `The root directory of the cluster's SSH users' accounts: fabricd creates
them (useradd) and writes their authorized keys in its etc/passwd and home
directories. / is the machine's own; another absolute path is for tests
and containers.`,
		parse: func(s *Settings, text string) error {
			if !filepath.IsAbs(text) {
				return fmt.Errorf("%q: want an absolute path", text)
			}
			s.SSHUsersRoot = text
			return nil
		},
		get: func(s *Settings) string { return s.SSHUsersRoot },
	},
	{
		Name: "store", Type: String, Default: BoltStore, Example: "etcds://192.0.2.11:2379,192.0.2.12:2379,192.0.2.13:2379",
		Usage: "where a coordinator keeps the cluster's records: bolt (its own file), or etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (etcds:// for TLS) that several coordinators share",
		Doc: `Where a coordinator keeps the cluster's records. bolt: in the peer's own
file, <state-dir>/fabric.db; the cluster then has this one coordinator.
etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: in an existing etcd v3 cluster
(its members' client endpoints), which several coordinators share ('fabric
coordinators add'); etcds://... reaches it over TLS (etcd-cacert,
etcd-cert, etcd-key). PREFIX (default fabric) is the etcd key prefix of
the cluster's keys, so one etcd can hold several clusters. The peer's own
state (its role, its reeve's) stays in fabric.db either way. Every
coordinator of a cluster has the same store; a node needs none. See
docs/etcd.md.`,
		parse: func(s *Settings, text string) error {
			if text != BoltStore {
				if _, err := etcdstore.ParseURL(text); err != nil {
					return fmt.Errorf("want %s or an etcd store: %w", BoltStore, err)
				}
			}
			s.Store = text
			return nil
		},
		get: func(s *Settings) string { return s.Store },
	},
	etcdFileKey("etcd-cacert", "/etc/fabric/etcd-ca.pem", "CA certificate (PEM) that verifies the etcd members; none: the system's roots",
		`With an etcds:// store: the PEM file of the CA that signed the etcd
members' certificates. Empty: the system's roots.`,
		func(s *Settings) *string { return &s.EtcdCACert }),
	etcdFileKey("etcd-cert", "/etc/fabric/etcd-client.pem", "client certificate (PEM) for etcd members that require one; with etcd-key",
		`With an etcds:// store: the PEM file of fabricd's client certificate,
for etcd members that require one (etcd --client-cert-auth). Set with
etcd-key.`,
		func(s *Settings) *string { return &s.EtcdCert }),
	etcdFileKey("etcd-key", "/etc/fabric/etcd-client-key.pem", "private key (PEM) of etcd-cert, mode 0600 or 0400",
		`With an etcds:// store: the PEM file of etcd-cert's private key. It must
not be readable by group or others (mode 0600 or 0400).`,
		func(s *Settings) *string { return &s.EtcdKey }),
}

// BoltStore is the store key's value for the peer's own bbolt file.
const BoltStore = "bolt"

// etcdFileKey is a key naming one of the etcd store's TLS files.
func etcdFileKey(name, example, usage, doc string, field func(*Settings) *string) *Key {
	return &Key{
		Name: name, Type: String, Example: example, Usage: usage, Doc: doc,
		parse: func(s *Settings, text string) error {
			*field(s) = text
			return nil
		},
		get: func(s *Settings) string { return *field(s) },
	}
}

// EtcdStore returns the options of the etcd store the settings name, with
// its TLS files read, or false for the bolt store. The etcd TLS keys go
// only with an etcds:// store.
func (s Settings) EtcdStore() (etcdstore.Options, bool, error) {
	files := etcdstore.TLSFiles{CACert: s.EtcdCACert, Cert: s.EtcdCert, Key: s.EtcdKey}
	if s.Store == BoltStore || s.Store == "" {
		if !files.IsZero() {
			return etcdstore.Options{}, false, fmt.Errorf("the etcd TLS keys (etcd-cacert, etcd-cert, etcd-key) are set but store is %s: they go with an etcds:// store", BoltStore)
		}
		return etcdstore.Options{}, false, nil
	}
	u, err := etcdstore.ParseURL(s.Store)
	if err != nil {
		return etcdstore.Options{}, false, fmt.Errorf("store: %w", err)
	}
	opts, err := u.Options(files)
	if err != nil {
		return etcdstore.Options{}, false, fmt.Errorf("store %s: %w", u, err)
	}
	return opts, true, nil
}

// hostLabel is the host name's first label, lowercased.
func hostLabel() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("the host name is unknown: %w", err)
	}
	label, _, _ := strings.Cut(strings.ToLower(h), ".")
	return label, nil
}

// Keys returns every key, in documentation order.
func Keys() []Key {
	out := make([]Key, len(keys))
	for i, k := range keys {
		out[i] = *k
	}
	return out
}

func lookup(name string) *Key {
	for _, k := range keys {
		if k.Name == name {
			return k
		}
	}
	return nil
}

func keyNames() string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return strings.Join(names, ", ")
}
