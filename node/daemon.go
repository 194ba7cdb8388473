package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/identity"
	"github.com/fabricmesh/fabric/internal/netmgr"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/node/pastiche"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/node/usermgr"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/spf13/afero"
	"google.golang.org/grpc"
)

// The network manager is the one core drives, and it tells the age of the
// handshake with the coordinator that a node reports on its watch.
var (
	_ core.NetworkManager  = (*netmgr.Manager)(nil)
	_ core.HandshakeReader = (*netmgr.Manager)(nil)
)

// Config configures a fabricd daemon.
type Config struct {
	// StateDir holds the identity and the store.
	StateDir string
	// Listen is the pubapi endpoint; its IP is the peer's public IP.
	Listen netip.AddrPort
	// BootstrapKey is the cluster's shared bootstrap key.
	BootstrapKey []byte
	Name         string
	Horde        string
	// WGPort is the WireGuard UDP port.
	WGPort int
	// InterfaceName of the WireGuard interface (default fabric0).
	InterfaceName string
	// VPNAPIPort is where a coordinator serves the vpnapi on its VPN IP.
	VPNAPIPort int
	// NoPastiche disables the pastiche demo service.
	NoPastiche bool
	// SSHUsersRoot is the directory whose etc/passwd and home directories
	// hold the SSH users the peer manages ("" or "/": the machine's own).
	SSHUsersRoot string
	// ClusterStore, if set, holds the cluster's records instead of this
	// peer's fabric.db: a store several coordinators share (etcd, or in
	// tests one in-memory store). ClusterStoreID names it, the same for
	// every peer that shares it. The peer's own state stays in fabric.db.
	ClusterStore   store.Store
	ClusterStoreID string
	Logger         *slog.Logger

	// The fields below let tests run many daemons in one process.

	// PubListener, if set, is used instead of listening on Listen.
	PubListener net.Listener
	// Network, if set, replaces the real WireGuard network manager.
	Network core.NetworkManager
	// Users, if set, replaces the real user manager.
	Users core.UserApplier
	// VPN, if set, replaces the real VPN network (listen on and dial VPN
	// addresses).
	VPN VPNNet
	// DialPublic, if set, replaces the TCP dialer with which a coordinator
	// reaches other peers' pubapi (to activate them, ask their state, have
	// them join or leave).
	DialPublic func(ctx context.Context, endpoint string) (net.Conn, error)
	// Keepalive of the coordinator's watches (default
	// vpnapi.DefaultKeepalive; a peer whose watch is open is shown offline
	// after two keepalives and 5 s without a report, as nodes answer each)
	// and OfflineAfter, how long a coordinator whose beat stopped stays
	// online (default liveness.DefaultOfflineAfter). Tests shorten them.
	Keepalive, OfflineAfter time.Duration
}

// followInterval is how often a coordinator sharing its cluster's store
// reads what the others committed.
const followInterval = 200 * time.Millisecond

// Defaults.
const (
	DefaultWGPort     = 51820
	DefaultVPNAPIPort = 7444
	DefaultHorde      = "sharks"
)

// Daemon is a running fabricd.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	id      *identity.Identity
	store   store.Store
	reg     *registry.Registry
	core    *core.Core
	network core.NetworkManager
	vpn     VPNNet
	dialer  *vpnapi.Dialer
	// Set once the peer has a role.
	reeve    atomic.Pointer[reeve.Reeve]
	pastiche atomic.Pointer[pastiche.Service]
	coord    atomic.Pointer[coordinatorServices]
	relay    atomic.Pointer[pastiche.Relay]
	// removed is closed when the coordinator removed this node and the
	// daemon must start over with a new identity.
	removed     chan struct{}
	removedOnce sync.Once

	wg      sync.WaitGroup
	mu      sync.Mutex
	servers []*grpc.Server
}

// Run starts fabricd and blocks until ctx ends, then shuts down. When the
// coordinator removes this node, Run wipes the state directory and starts
// over: a fresh peer in accepting-init with a new identity, which can be
// added again.
func Run(ctx context.Context, cfg Config) error {
	if err := finishWipe(cfg.StateDir); err != nil {
		return err
	}
	for {
		dctx, cancel := context.WithCancel(ctx)
		d, err := Start(dctx, cfg)
		if err != nil {
			cancel()
			return err
		}
		select {
		case <-ctx.Done():
			cancel()
			d.Wait()
			return nil
		case <-d.Removed():
		}
		cancel()
		d.Wait()
		cfg.Logger.Warn("removed from the cluster: wiping the state directory and starting over with a new identity", "stateDir", cfg.StateDir)
		if err := wipeState(cfg.StateDir); err != nil {
			return err
		}
	}
}

// Removed is closed when the coordinator removed this node (Run then
// starts over).
func (d *Daemon) Removed() <-chan struct{} { return d.removed }

// Start starts fabricd: it loads or creates the identity, opens the store,
// serves the pubapi and restores the persisted role. The daemon stops when
// ctx ends; Wait waits for that.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, vpn: cfg.VPN, removed: make(chan struct{})}
	if d.vpn == nil {
		d.vpn = HostVPN{}
	}
	if err := d.open(); err != nil {
		d.closeResources()
		return nil, err
	}
	if err := d.servePubAPI(ctx); err != nil {
		d.closeResources()
		return nil, err
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		<-ctx.Done()
		d.shutdown()
	}()
	if err := d.core.Start(ctx); err != nil {
		d.log.Error("could not restore the peer's role; serving GetState only", "err", err)
	}
	return d, nil
}

func (cfg *Config) check() error {
	switch {
	case cfg.StateDir == "":
		return errors.New("--state-dir is required")
	case !cfg.Listen.IsValid():
		return errors.New("--listen is required")
	case len(cfg.BootstrapKey) == 0:
		return errors.New("the bootstrap key is required")
	}
	if cfg.Horde == "" {
		cfg.Horde = DefaultHorde
	}
	if cfg.WGPort == 0 {
		cfg.WGPort = DefaultWGPort
	}
	if cfg.VPNAPIPort == 0 {
		cfg.VPNAPIPort = DefaultVPNAPIPort
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// open loads the identity and the store and builds core.
func (d *Daemon) open() error {
	cfg := d.cfg
	if err := openStateDir(cfg.StateDir); err != nil {
		return err
	}
	idDir := filepath.Join(cfg.StateDir, "identity")
	hadIdentity, err := identity.Exists(idDir)
	if err != nil {
		return err
	}
	id, err := identity.LoadOrCreate(idDir, d.log)
	if err != nil {
		return err
	}
	d.id = id
	if err := d.openStore(hadIdentity); err != nil {
		return err
	}
	d.dialer = &vpnapi.Dialer{SigningPrivKey: id.SigningPrivKey, DialContext: d.vpn.Dial}
	d.network = cfg.Network
	if d.network == nil {
		if d.network, err = netmgr.New(netmgr.Config{InterfaceName: cfg.InterfaceName, Logger: d.log.With("component", "netmgr")}); err != nil {
			return err
		}
	}
	d.core, err = core.New(core.Config{
		Self: core.Self{
			Name: cfg.Name, Horde: cfg.Horde, PublicEndpoint: cfg.Listen, WGPort: cfg.WGPort,
			VPNPrivKey: id.VPNPrivKey, SigningPubKey: id.SigningPubKey(), TLSPin: id.TLSCertPin,
		},
		Store:          d.store,
		Registry:       d.reg,
		SharedRegistry: cfg.ClusterStore != nil,
		StoreID:        cfg.ClusterStoreID,
		Network:        d.network,
		Activator:      pubapi.NewNodeActivator(cfg.BootstrapKey, id.SigningPrivKey, d.publicDialOpts()...),
		Dialer:         d.dialer,
		Services:       services{d},
		Views:          services{d},
		Users:          d.userManager(),
		VPNAPIPort:     cfg.VPNAPIPort,
		Applied: func(ip netip.Addr, rev uint64) {
			if co := d.coord.Load(); co != nil {
				co.tracker.Self(ip, rev)
			}
		},
		Logger: d.log.With("component", "core"),
	})
	return err
}

// publicDialOpts are the options of the coordinator's connections to
// other peers' pubapi.
func (d *Daemon) publicDialOpts() []grpc.DialOption {
	if d.cfg.DialPublic == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithContextDialer(d.cfg.DialPublic)}
}

// openStateDir makes the state directory (mode 0700) and refuses one that
// group or others may access: it holds the peer's private keys and its
// store.
func openStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("checking state dir: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("state directory %s has mode %04o: it holds the peer's private keys and must not be accessible by group or others (chmod 700 %s)",
			dir, perm, dir)
	}
	return nil
}

// openStore opens the store and loads the registry from it. A store that
// is missing or empty next to an identity that existed is refused: the peer
// may have had a role, and a fresh store would make it a fresh peer that
// another cluster could activate. A damaged store, or one whose records do
// not load, leaves the daemon serving the pubapi in state failed, with the
// reason (core reads its role from an unusable store).
func (d *Daemon) openStore(hadIdentity bool) error {
	path := filepath.Join(d.cfg.StateDir, "fabric.db")
	startOver := fmt.Sprintf("this peer may have had a role in a cluster, and it does not start as a fresh peer on its own. "+
		"To start this machine over on purpose, stop fabricd and delete %s (it gets a new identity; fabric add-nodes activates it again)", d.cfg.StateDir)
	if _, err := os.Lstat(path); hadIdentity && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state store %s is missing, but the identity next to it exists: %s", path, startOver)
	}
	st, err := boltstore.Open(path, boltstore.Options{})
	switch {
	case errors.Is(err, boltstore.ErrEmpty):
		return fmt.Errorf("%w: %s", err, startOver)
	case errors.Is(err, boltstore.ErrDamaged):
		d.unusableStore(err)
		return nil
	case err != nil:
		return err
	}
	d.store = st
	regStore := store.Store(st)
	if d.cfg.ClusterStore != nil {
		// The cluster's records are shared; none may stay behind here.
		if err := registry.CheckMoved(st, d.cfg.ClusterStoreID); err != nil {
			return fmt.Errorf("state store %s: %w", path, err)
		}
		regStore = d.cfg.ClusterStore
	}
	if d.reg, err = registry.Open(regStore); err != nil {
		d.unusableStore(err)
	}
	return nil
}

// unusableStore replaces the store that could not be used by one whose
// every transaction fails with err, and the registry by an empty one
// nothing writes to: core then restores no role and reports the peer
// failed, and the pubapi answers GetState with the reason.
func (d *Daemon) unusableStore(err error) {
	d.log.Error("the state store cannot be used; the peer is failed and serves GetState only", "err", err)
	if d.store != nil {
		if cerr := d.store.Close(); cerr != nil {
			d.log.Warn("closing the store", "err", cerr)
		}
	}
	d.store = unusable{err: err}
	d.reg, _ = registry.Open(store.NewMem()) // an empty store loads
}

// unusable is a store that could not be opened or loaded.
type unusable struct{ err error }

func (u unusable) View(func(store.Tx) error) error   { return u.err }
func (u unusable) Update(func(store.Tx) error) error { return u.err }
func (u unusable) Close() error                      { return nil }

// userManager is Config.Users or the real user manager of the machine (or
// of Config.SSHUsersRoot).
func (d *Daemon) userManager() core.UserApplier {
	if d.cfg.Users != nil {
		return d.cfg.Users
	}
	root := d.cfg.SSHUsersRoot
	if root == "" {
		root = "/"
	}
	m := &usermgr.LinuxUserManager{
		Fs: afero.NewOsFs(), Creator: &usermgr.LinuxUserCreator{},
		HomeFs: func(home string) (afero.Fs, error) { return usermgr.OpenHomeFs(filepath.Join(root, home)) },
		Logger: d.log.With("component", "usermgr"),
	}
	if root != "/" {
		m.Fs, m.Creator = afero.NewBasePathFs(afero.NewOsFs(), root), &usermgr.LinuxUserCreator{Root: root}
	}
	return m
}

// servePubAPI serves the pubapi on the public endpoint. Before activation it
// accepts the bootstrap key; on a coordinator it also accepts admin keys.
func (d *Daemon) servePubAPI(ctx context.Context) error {
	creds, err := authconn.NewServerCredentials(authconn.ServerConfig{
		Certificate:      d.id.TLSCert,
		BootstrapKey:     d.cfg.BootstrapKey,
		LookupSigningKey: d.lookupAdmin,
		Logger:           d.log.With("component", "pubapi"),
	})
	if err != nil {
		return err
	}
	lis := d.cfg.PubListener
	if lis == nil {
		if lis, err = net.Listen("tcp", d.cfg.Listen.String()); err != nil {
			return fmt.Errorf("listening for the pubapi on %s: %w", d.cfg.Listen, err)
		}
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.MaxRecvMsgSize(pubapi.MaxRequestSize), pubapi.KeepalivePolicy())
	pubapipb.RegisterPubAPIServer(srv, pubapi.NewServer(pubapi.Config{
		Core:           d.core,
		PublicEndpoint: d.cfg.Listen.String(),
		VPNAPIPort:     d.cfg.VPNAPIPort,
		Coordinator: func() pubapi.Coordinator {
			if co := d.coord.Load(); co != nil {
				return co
			}
			return nil
		},
		Relay: func() pubapi.Relay {
			if r := d.relay.Load(); r != nil {
				return pasticheRelay{r}
			}
			return nil
		},
	}))
	d.serve(srv, lis, "pubapi")
	d.log.Info("serving pubapi", "endpoint", lis.Addr().String())
	return nil
}

// lookupAdmin accepts the admin keys of the cluster in the registry, which
// only a coordinator has: also while its role is being restored or after
// it failed, so that an admin's call gets the peer's state (busy, failed)
// rather than a refusal of its key.
func (d *Daemon) lookupAdmin(pubKey ed25519.PublicKey) (string, error) {
	if _, ok := d.reg.Cluster(); !ok {
		return "", errors.New("not a coordinator")
	}
	p, ok := d.reg.LookupSigningKey(pubKey)
	if !ok || p.Role != records.RoleAdmin {
		return "", errors.New("not an admin key of this cluster")
	}
	return "admin:" + p.Name, nil
}

func (d *Daemon) serve(srv *grpc.Server, lis net.Listener, what string) {
	d.mu.Lock()
	d.servers = append(d.servers, srv)
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			d.log.Error("server stopped", "server", what, "err", err)
		}
	}()
}

// shutdown stops the servers (long polls are cut, nodes retry), waits for
// core's loops and releases the store and the network.
func (d *Daemon) shutdown() {
	d.mu.Lock()
	servers := d.servers
	d.mu.Unlock()
	for _, srv := range servers {
		srv.Stop()
	}
	d.core.Wait()
	if p := d.pastiche.Load(); p != nil {
		p.Wait()
	}
	if r := d.reeve.Load(); r != nil {
		r.Wait()
	}
	d.closeResources()
	d.log.Info("stopped")
}

func (d *Daemon) closeResources() {
	if closer, ok := d.network.(io.Closer); ok {
		if err := closer.Close(); err != nil {
			d.log.Warn("closing the network manager", "err", err)
		}
	}
	if d.store != nil {
		if err := d.store.Close(); err != nil {
			d.log.Warn("closing the store", "err", err)
		}
	}
}

// Wait blocks until the daemon has shut down.
func (d *Daemon) Wait() { d.wg.Wait() }

// Identity returns the daemon's identity (public parts are useful to tests).
func (d *Daemon) Identity() *identity.Identity { return d.id }

// Core returns the daemon's core.
func (d *Daemon) Core() *core.Core { return d.core }

// Store returns the daemon's own store (fabric.db), for tests that compare
// its contents.
func (d *Daemon) Store() store.Store { return d.store }

func (d *Daemon) now() time.Time { return time.Now() }
