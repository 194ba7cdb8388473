// Package inproc runs a fabric cluster inside one process without root:
// real fabricd daemons (node.Start) with real gRPC over TLS on loopback, but
// fake network managers, a loopback VPN instead of WireGuard, and user
// managers on memory file systems. The in-process tests and the 200-node
// benchmark use it; activation goes through the real CLI code (cli.Run).
package inproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/cli"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/core/coretest"
	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/loopvpn"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/node"
	"github.com/fabricmesh/fabric/node/usermgr"
	"github.com/fabricmesh/fabric/node/usermgr/usermgrtest"
	"github.com/spf13/afero"
)

// Cluster is a set of in-process peers sharing one loopback VPN.
type Cluster struct {
	Dir          string
	BootstrapKey []byte
	KeyFile      string
	VPN          *loopvpn.VPN
	Logger       *slog.Logger
	// Keepalive and OfflineAfter (0: defaults; see node.Config).
	Keepalive, OfflineAfter time.Duration
	// ClusterStore, if set, is the store the peers added with
	// AddCoordinatorPeer share for the cluster's records (several
	// coordinators, like etcd in production), and ClusterStoreID names it
	// (default "in-process cluster store").
	ClusterStore   store.Store
	ClusterStoreID string

	mu    sync.Mutex
	peers []*Peer
}

// Peer is one in-process fabricd.
type Peer struct {
	Name     string
	Endpoint netip.AddrPort
	Network  *coretest.FakeNetworkManager
	StateDir string
	// Users is the peer's user manager, on a memory file system of its own
	// (UsersFs) that survives restarts.
	Users   *usermgr.LinuxUserManager
	UsersFs afero.Fs

	shared  bool // keeps the cluster's records in the cluster's store
	cluster *Cluster
	daemon  *node.Daemon
	cancel  context.CancelFunc
}

// New makes an empty cluster in dir with a fresh bootstrap key.
func New(dir string, logger *slog.Logger) (*Cluster, error) {
	key, err := bootstrapkey.Generate()
	if err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "bootstrap.key")
	if err := bootstrapkey.WriteFile(keyFile, key); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cluster{Dir: dir, BootstrapKey: key, KeyFile: keyFile, VPN: loopvpn.New(), Logger: logger}, nil
}

// AddPeer starts a new fabricd named name on a free loopback port.
func (c *Cluster) AddPeer(ctx context.Context, name, horde string) (*Peer, error) {
	return c.addPeer(ctx, name, horde, false)
}

// AddCoordinatorPeer is AddPeer for a peer that may become one of several
// coordinators: it keeps the cluster's records in c.ClusterStore.
func (c *Cluster) AddCoordinatorPeer(ctx context.Context, name, horde string) (*Peer, error) {
	if c.ClusterStore == nil {
		c.ClusterStore = store.NewMem()
	}
	return c.addPeer(ctx, name, horde, true)
}

func (c *Cluster) addPeer(ctx context.Context, name, horde string, shared bool) (*Peer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Peer{
		Name:     name,
		Endpoint: netip.MustParseAddrPort(lis.Addr().String()),
		Network:  coretest.NewFakeNetworkManager(),
		StateDir: filepath.Join(c.Dir, name),
		UsersFs:  afero.NewMemMapFs(),
		shared:   shared,
		cluster:  c,
	}
	p.Users = usermgrtest.NewLinuxUserManagerFake(p.UsersFs)
	if err := p.start(ctx, lis, horde); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.peers = append(c.peers, p)
	c.mu.Unlock()
	return p, nil
}

func (p *Peer) start(ctx context.Context, lis net.Listener, horde string) error {
	ctx, cancel := context.WithCancel(ctx)
	var clusterStore store.Store
	var clusterStoreID string
	if p.shared {
		clusterStore, clusterStoreID = p.cluster.ClusterStore, p.cluster.ClusterStoreID
		if clusterStoreID == "" {
			clusterStoreID = "in-process cluster store"
		}
	}
	d, err := node.Start(ctx, node.Config{
		ClusterStore: clusterStore, ClusterStoreID: clusterStoreID,
		StateDir: p.StateDir, Listen: p.Endpoint, BootstrapKey: p.cluster.BootstrapKey,
		Name: p.Name, Horde: horde, WGPort: int(p.Endpoint.Port()),
		Logger:      p.cluster.Logger.With("peer", p.Name),
		PubListener: lis, Network: p.Network, Users: p.Users, VPN: p.cluster.VPN,
		Keepalive: p.cluster.Keepalive, OfflineAfter: p.cluster.OfflineAfter,
		DialPublic: p.cluster.dialPublic,
	})
	if err != nil {
		cancel()
		lis.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.daemon, p.cancel = d, cancel
	return nil
}

// ShareClusterStore makes the peer keep the cluster's records in the
// cluster's store from its next Restart on (fabricd restarted with
// --store, after fabricd migrate-store).
func (p *Peer) ShareClusterStore() { p.shared = true }

// dialPublic is how a coordinator of the cluster reaches another peer's
// pubapi: only the cluster's own peers, on loopback. Any other endpoint
// (one a test or a fuzzer made up) is refused as unreachable, so an
// in-process cluster never reaches out to the network.
func (c *Cluster) dialPublic(ctx context.Context, endpoint string) (net.Conn, error) {
	c.mu.Lock()
	known := false
	for _, p := range c.peers {
		known = known || p.Endpoint.String() == endpoint
	}
	c.mu.Unlock()
	if !known {
		return nil, fmt.Errorf("no in-process peer listens at %s", endpoint)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", endpoint)
}

// Stop stops the peer's daemon and waits for it.
func (p *Peer) Stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.daemon.Wait()
	p.cancel = nil
}

// Restart stops the daemon and starts it again from its state dir, on the
// same endpoint and with the same (fake) device.
func (p *Peer) Restart(ctx context.Context) error {
	horde := p.daemon.Core().Status().Horde
	p.Stop()
	var lis net.Listener
	var err error
	for range 50 { // the port was just released; retry briefly if taken
		if lis, err = net.Listen("tcp", p.Endpoint.String()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	return p.start(ctx, lis, horde)
}

// Core returns the peer's core.
func (p *Peer) Core() *core.Core { return p.daemon.Core() }

// Store returns the peer's own store (fabric.db).
func (p *Peer) Store() store.Store { return p.daemon.Store() }

// Removed is closed when the coordinator removed the peer and it left
// its cluster (fabricd would then wipe its state and start over; the
// in-process peer stays in accepting-init with its old identity).
func (p *Peer) Removed() <-chan struct{} { return p.daemon.Removed() }

// Close stops every peer.
func (c *Cluster) Close() {
	c.mu.Lock()
	peers := c.peers
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop() }()
	}
	wg.Wait()
}

// AdminDir is where CLI calls of this cluster keep the admin bundle.
func (c *Cluster) AdminDir() string { return filepath.Join(c.Dir, "admin") }

// CLI runs the real fabric CLI with args and returns its output.
func (c *Cluster) CLI(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	code := cli.Run(ctx, args, &out, &out)
	if code != 0 {
		return out.String(), fmt.Errorf("fabric %s: exit %d: %s", strings.Join(args, " "), code, out.String())
	}
	return out.String(), nil
}

// Activate runs `fabric activate` with the first peer as coordinator.
func (c *Cluster) Activate(ctx context.Context, coordinator *Peer, nodes []*Peer, vpnCIDR string) (string, error) {
	return c.CLI(ctx, "activate", "--coordinator", coordinator.Endpoint.String(), "--nodes", Endpoints(nodes),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", vpnCIDR, "--admin-dir", c.AdminDir())
}

// Endpoints joins the peers' endpoints with commas.
func Endpoints(peers []*Peer) string {
	var s []string
	for _, p := range peers {
		s = append(s, p.Endpoint.String())
	}
	return strings.Join(s, ",")
}

// Watch runs `fabric watch --n n`.
func (c *Cluster) Watch(ctx context.Context, n int, timeout time.Duration) (string, error) {
	return c.CLI(ctx, "watch", "--n", fmt.Sprint(n), "--timeout", timeout.String(), "--admin-dir", c.AdminDir())
}

// Status runs `fabric status -o json` and decodes it.
func (c *Cluster) Status(ctx context.Context) (clusterstatus.Status, error) {
	out, err := c.CLI(ctx, "status", "-o", "json", "--admin-dir", c.AdminDir())
	if err != nil {
		return clusterstatus.Status{}, err
	}
	var st clusterstatus.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return clusterstatus.Status{}, fmt.Errorf("decoding status: %w", err)
	}
	return st, nil
}
