// Package etcdlab runs a real etcd cluster for tests and demos: Debian's
// etcd binary (package etcd-server), one process per member, started and
// killed by PID. Members run on this machine on free loopback ports
// (StartLocal, for Go tests without root) or on namespace hosts of a
// testbed/nshost lab (nshost.StartEtcd), through a Runner.
//
// Kill and Restart let member-loss tests take members away and bring them
// back with their data. The clusters are tuned for tests: short raft
// timers (heartbeat 50 ms, election 500 ms), and larger limits per
// transaction than etcd's defaults (--max-txn-ops 4096,
// --max-request-bytes 8 MiB), which the fabric registry's group commit
// needs (docs/etcd.md).
package etcdlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Defaults of Config.
const (
	DefaultHeartbeat = 50 * time.Millisecond
	DefaultElection  = 500 * time.Millisecond
	// MaxTxnOps and MaxRequestBytes are the members' limits per
	// transaction.
	MaxTxnOps       = 4096
	MaxRequestBytes = 8 << 20
)

// Binary returns the etcd binary to run: $FABRIC_ETCD, or etcd in PATH
// (Debian's etcd-server package installs /usr/bin/etcd).
func Binary() (string, error) {
	if b := os.Getenv("FABRIC_ETCD"); b != "" {
		return b, nil
	}
	b, err := exec.LookPath("etcd")
	if err != nil {
		return "", fmt.Errorf("no etcd binary in PATH (apt-get install etcd-server, or set FABRIC_ETCD): %w", err)
	}
	return b, nil
}

// Process is a member's running etcd, as a Runner started it.
type Process interface {
	PID() int
	// Kill sends SIGKILL and waits until the process is gone.
	Kill() error
	// Stop sends SIGTERM, then SIGKILL if it does not exit in time.
	Stop(ctx context.Context) error
	Exited() <-chan struct{}
	// LogPath is the file with the process's output.
	LogPath() string
}

// Runner starts a member's process where the member runs.
type Runner interface {
	Start(name string, args ...string) (Process, error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(name string, args ...string) (Process, error)

// Start implements Runner.
func (f RunnerFunc) Start(name string, args ...string) (Process, error) { return f(name, args...) }

// MemberConfig places one member.
type MemberConfig struct {
	Name string
	// IP is the address the member listens on for clients and peers.
	IP                   netip.Addr
	ClientPort, PeerPort int
	// Dir holds the member's data directory (Dir/data).
	Dir    string
	Runner Runner
}

// TLSFiles are the PEM files of a TLS setup: the CA, a server certificate
// and key for the members, and a client certificate and key.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// Config configures Start.
type Config struct {
	// Binary is the etcd binary (default: Binary()).
	Binary  string
	Members []MemberConfig
	// TLS, if set, makes the members serve clients over TLS with
	// ServerCert and require client certificates signed by CA.
	TLS *TLSFiles
	// Heartbeat and Election are the raft timers (defaults above).
	Heartbeat, Election time.Duration
	// Token makes the cluster's ID unique (default: a value from the
	// time).
	Token string
	// DialContext, if set, opens the connections of the Cluster's own
	// clients (Client, and the wait for the members to serve), for members
	// this process cannot reach directly (namespace hosts).
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	Logger      *slog.Logger
}

// Cluster is a running etcd cluster.
type Cluster struct {
	cfg     Config
	members []*Member
}

// Member is one etcd member of a Cluster.
type Member struct {
	cfg  MemberConfig
	args []string

	mu   sync.Mutex
	proc Process // nil while killed
}

// Name returns the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// ClientEndpoint returns the member's client endpoint, IP:PORT.
func (m *Member) ClientEndpoint() string {
	return netip.AddrPortFrom(m.cfg.IP, uint16(m.cfg.ClientPort)).String()
}

// PID returns the PID of the member's process, 0 while it is killed.
func (m *Member) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.PID()
}

// Start starts every member and waits until the cluster serves
// linearizable reads on every member. On error the members started are
// stopped.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Binary == "" {
		b, err := Binary()
		if err != nil {
			return nil, err
		}
		cfg.Binary = b
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Election <= 0 {
		cfg.Election = DefaultElection
	}
	if cfg.Token == "" {
		cfg.Token = "etcdlab-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Members) == 0 {
		return nil, errors.New("etcdlab: no members")
	}
	c := &Cluster{cfg: cfg}
	var initial []string
	for _, mc := range cfg.Members {
		initial = append(initial, mc.Name+"="+peerURL(mc))
	}
	for _, mc := range cfg.Members {
		c.members = append(c.members, &Member{cfg: mc, args: c.memberArgs(mc, strings.Join(initial, ","))})
	}
	for _, m := range c.members {
		if err := c.start(m); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, m := range c.members {
		if err := c.waitServing(ctx, m); err != nil {
			c.Close()
			return nil, err
		}
	}
	cfg.Logger.Info("etcd cluster up", "members", len(c.members), "endpoints", strings.Join(c.Endpoints(), ","))
	return c, nil
}

func peerURL(mc MemberConfig) string {
	return "http://" + netip.AddrPortFrom(mc.IP, uint16(mc.PeerPort)).String()
}

func (c *Cluster) memberArgs(mc MemberConfig, initialCluster string) []string {
	scheme := "http"
	if c.cfg.TLS != nil {
		scheme = "https"
	}
	clientURL := scheme + "://" + netip.AddrPortFrom(mc.IP, uint16(mc.ClientPort)).String()
	args := []string{
		"--name", mc.Name,
		"--data-dir", filepath.Join(mc.Dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL(mc), "--initial-advertise-peer-urls", peerURL(mc),
		"--initial-cluster", initialCluster,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", c.cfg.Token,
		"--heartbeat-interval", strconv.FormatInt(c.cfg.Heartbeat.Milliseconds(), 10),
		"--election-timeout", strconv.FormatInt(c.cfg.Election.Milliseconds(), 10),
		"--max-txn-ops", strconv.Itoa(MaxTxnOps),
		"--max-request-bytes", strconv.Itoa(MaxRequestBytes),
		"--snapshot-count", "10000",
		"--logger", "zap", "--log-level", "warn",
	}
	if t := c.cfg.TLS; t != nil {
		args = append(args, "--cert-file", t.ServerCert, "--key-file", t.ServerKey,
			"--trusted-ca-file", t.CA, "--client-cert-auth")
	}
	return args
}

// start starts m's process (its data directory may exist: a restart).
func (c *Cluster) start(m *Member) error {
	if err := os.MkdirAll(m.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("etcd member %s: %w", m.cfg.Name, err)
	}
	p, err := m.cfg.Runner.Start(c.cfg.Binary, m.args...)
	if err != nil {
		return fmt.Errorf("starting etcd member %s: %w", m.cfg.Name, err)
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	c.cfg.Logger.Info("etcd member started", "member", m.cfg.Name, "pid", p.PID(), "endpoint", m.ClientEndpoint())
	return nil
}

// waitServing waits until m answers a linearizable read (so it is part
// of a cluster with a leader), or fails when its process exits.
func (c *Cluster) waitServing(ctx context.Context, m *Member) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	client, err := c.Client(m.ClientEndpoint())
	if err != nil {
		return err
	}
	defer client.Close()
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := client.Get(clientv3.WithRequireLeader(rctx), "etcdlab-probe")
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("etcd member %s (pid %d) exited while starting; its log %s ends:\n%s",
				m.cfg.Name, p.PID(), p.LogPath(), logTail(p.LogPath()))
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s (pid %d) not serving: %w (last error: %v); its log %s ends:\n%s",
				m.cfg.Name, p.PID(), ctx.Err(), err, p.LogPath(), logTail(p.LogPath()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Client returns an etcd client of the endpoints (default: every
// member's), with the cluster's TLS.
func (c *Cluster) Client(endpoints ...string) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if c.cfg.DialContext != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(c.cfg.DialContext)}
	}
	if c.cfg.TLS != nil {
		tlsCfg, err := c.cfg.TLS.ClientConfig()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	return clientv3.New(cfg)
}

// Members returns the members, in the order of Config.Members.
func (c *Cluster) Members() []*Member { return c.members }

// Endpoints returns every member's client endpoint.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.ClientEndpoint())
	}
	return eps
}

// URL returns the cluster as fabricd's --store takes it, with prefix as
// the key prefix (etcd://A,B,C/prefix, etcds:// with TLS).
func (c *Cluster) URL(prefix string) string {
	scheme := "etcd"
	if c.cfg.TLS != nil {
		scheme = "etcds"
	}
	return scheme + "://" + strings.Join(c.Endpoints(), ",") + "/" + strings.TrimPrefix(prefix, "/")
}

// Kill SIGKILLs member i, as a crash would.
func (c *Cluster) Kill(i int) error {
	m := c.members[i]
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("etcd member %s is not running", m.cfg.Name)
	}
	if err := p.Kill(); err != nil {
		return fmt.Errorf("killing etcd member %s: %w", m.cfg.Name, err)
	}
	c.cfg.Logger.Info("etcd member killed", "member", m.cfg.Name, "pid", p.PID())
	return nil
}

// Restart starts member i again on its data and waits until it serves,
// which needs a quorum of members running.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	m := c.members[i]
	if m.PID() != 0 {
		return fmt.Errorf("etcd member %s is running", m.cfg.Name)
	}
	if err := c.start(m); err != nil {
		return err
	}
	return c.waitServing(ctx, m)
}

// Close stops every member still running (SIGTERM, then SIGKILL).
func (c *Cluster) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, m := range c.members {
		m.mu.Lock()
		p := m.proc
		m.proc = nil
		m.mu.Unlock()
		if p != nil {
			if err := p.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stopping etcd member %s: %w", m.cfg.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// logTail returns the end of a log file, for error messages.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 2048 {
		_, _ = f.Seek(-2048, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
