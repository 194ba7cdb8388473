package core

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// State is where a peer is in its lifecycle.
type State string

// States.
const (
	StateAcceptingInit State = "accepting-init"
	StateActivating    State = "activating"
	StateCoordinator   State = "coordinator"
	StateNode          State = "node"
	StateFailed        State = "failed"
)

// Errors the API layer maps to status codes.
var (
	// ErrInvalidArgument: the request is malformed; nothing changed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrWrongState: the peer is not in a state that allows the request.
	ErrWrongState = errors.New("wrong state")
)

// Self is what a peer knows about itself before activation.
type Self struct {
	Name  string
	Horde string
	// PublicEndpoint is the pubapi endpoint, IP:PORT.
	PublicEndpoint netip.AddrPort
	// WGPort is the UDP port of the WireGuard interface.
	WGPort        int
	VPNPrivKey    wgtypes.Key
	SigningPubKey ed25519.PublicKey
	// TLSPin is the SHA-256 of the peer's TLS certificate.
	TLSPin []byte
}

// WGEndpoint is where the peer's WireGuard listens: its public IP and WGPort.
func (s Self) WGEndpoint() netip.AddrPort {
	return netip.AddrPortFrom(s.PublicEndpoint.Addr(), uint16(s.WGPort))
}

// RoleServices starts what a role needs beyond core: the daemon serves the
// vpnapi on a coordinator, for example. Both are called once the role's
// network is up, on activation and on every restart. StartCoordinator
// returns the feed the coordinator follows its own records with.
//
// Removed is called when the coordinator removed this node, after core
// brought its network down and forgot its cluster: the daemon drops what
// the role's services keep and returns the peer to accepting-init with a
// new identity.
type RoleServices interface {
	StartCoordinator(ctx context.Context, self records.Peer) (Feed, error)
	StartNode(ctx context.Context, node NodeConfig) error
	Removed(ctx context.Context) error
}

// Config is what New needs.
type Config struct {
	Self  Self
	Store store.Store
	// Registry holds the cluster's records (filled on a coordinator).
	Registry Registry
	// SharedRegistry is set when Registry is in a store of its own that
	// several coordinators share (etcd), not in Store; StoreID then names
	// that store, so that coordinators joining a cluster can tell they
	// share it.
	SharedRegistry bool
	StoreID        string
	Network        NetworkManager
	Activator      NodeActivator
	Dialer         CoordinatorDialer
	Services       RoleServices
	// Views applies the node's service view (optional).
	Views ViewApplier
	// Users installs the cluster's SSH users on this peer (optional).
	Users UserApplier
	// VPNAPIPort is the port of the coordinator's vpnapi on its VPN IP.
	VPNAPIPort int
	// ActivationConcurrency bounds the nodes activated at once (default 128).
	ActivationConcurrency int
	// NodeActivationTimeout bounds one node's activation, its retries
	// after an interruption included (default 30s).
	NodeActivationTimeout time.Duration
	// RecoveryMinBackoff and RecoveryMaxBackoff space the coordinator's
	// own retries of nodes whose activation failed for a reason that may
	// pass (defaults DefaultRecoveryMinBackoff, DefaultRecoveryMaxBackoff).
	RecoveryMinBackoff, RecoveryMaxBackoff time.Duration
	// Backoff bounds the retry delay of the update loops (defaults 100ms, 5s).
	MinBackoff, MaxBackoff time.Duration
	// Applied, if set, learns each revision the coordinator applied to
	// its own WireGuard peers.
	Applied func(ip netip.Addr, rev uint64)
	Logger  *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Core is a peer's logic. It is safe for concurrent use.
type Core struct {
	cfg Config
	log *slog.Logger
	reg Registry

	mu      sync.Mutex
	state   State
	failure string
	node    *NodeConfig // set when StateNode
	// stopNode ends the node loop (set when StateNode).
	stopNode context.CancelFunc
	// acts are a coordinator's node activations.
	acts *activations
	// known are the coordinators a node's loop knows from its peers, kept
	// as they change (Coordinators; nil: read them from the store).
	known atomic.Pointer[[]CoordinatorInfo]

	ctx context.Context // lifetime of background loops, set by Start
	wg  sync.WaitGroup
}

const keyRole = "core/role"

type persistedRole struct {
	Role State `json:"role"`
}

// New checks cfg. Call Start to restore the persisted role.
func New(cfg Config) (*Core, error) {
	if cfg.Store == nil || cfg.Registry == nil || cfg.Network == nil || cfg.Activator == nil || cfg.Dialer == nil || cfg.Services == nil {
		return nil, errors.New("core: Store, Registry, Network, Activator, Dialer and Services are required")
	}
	if !cfg.Self.PublicEndpoint.IsValid() || cfg.Self.WGPort <= 0 || cfg.Self.WGPort > 65535 {
		return nil, errors.New("core: Self.PublicEndpoint and Self.WGPort are required")
	}
	setDefaults(&cfg)
	return &Core{cfg: cfg, log: cfg.Logger, reg: cfg.Registry, state: StateAcceptingInit, acts: newActivations(cfg.ActivationConcurrency)}, nil
}

func setDefaults(cfg *Config) {
	if cfg.VPNAPIPort == 0 {
		cfg.VPNAPIPort = 7444
	}
	if cfg.ActivationConcurrency <= 0 {
		cfg.ActivationConcurrency = 128
	}
	if cfg.NodeActivationTimeout <= 0 {
		cfg.NodeActivationTimeout = 30 * time.Second
	}
	if cfg.RecoveryMinBackoff <= 0 {
		cfg.RecoveryMinBackoff = DefaultRecoveryMinBackoff
	}
	if cfg.RecoveryMaxBackoff < cfg.RecoveryMinBackoff {
		cfg.RecoveryMaxBackoff = max(DefaultRecoveryMaxBackoff, cfg.RecoveryMinBackoff)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// Start restores the role persisted in the store: a coordinator or node
// brings its network back up with the same VPN IP and keys and resumes its
// loops, which run until ctx ends. While it does, the peer is activating
// (calls get ErrBusy). A peer that cannot restore its role goes to
// StateFailed with the reason (see Status); Start returns that error too.
func (c *Core) Start(ctx context.Context) error {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	var role persistedRole
	err := c.cfg.Store.View(func(tx store.Tx) error { return store.GetJSON(tx, keyRole, &role) })
	switch {
	case errors.Is(err, store.ErrNotFound) && c.sharedCoordinator():
		// The shared registry made this peer a coordinator, and it
		// crashed before it persisted the role: it adopts it.
		if err := c.cfg.Store.Update(func(tx store.Tx) error {
			return store.PutJSON(tx, keyRole, persistedRole{Role: StateCoordinator})
		}); err != nil {
			return c.fail(fmt.Errorf("persisting the coordinator role: %w", err))
		}
		role.Role = StateCoordinator
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return c.fail(fmt.Errorf("reading persisted role: %w", err))
	}
	c.mu.Lock()
	c.state = StateActivating
	c.mu.Unlock()
	switch role.Role {
	case StateCoordinator:
		err = c.restoreCoordinator(ctx)
	case StateNode:
		err = c.restoreNode(ctx)
	default:
		err = fmt.Errorf("unknown persisted role %q", role.Role)
	}
	if err != nil {
		return c.fail(fmt.Errorf("restoring role %s: %w", role.Role, err))
	}
	c.log.Info("restored role", "role", role.Role)
	return nil
}

// sharedCoordinator reports whether a shared registry has this peer as an
// active coordinator.
func (c *Core) sharedCoordinator() bool {
	if !c.cfg.SharedRegistry {
		return false
	}
	_, err := c.coordinatorRecord()
	return err == nil
}

func (c *Core) fail(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state, c.failure = StateFailed, err.Error()
	c.log.Error("peer failed", "err", err)
	return err
}

// Wait blocks until the background loops started by Start or an activation
// have returned (after the context given to Start ends).
func (c *Core) Wait() { c.wg.Wait() }

// go runs fn in the background for the lifetime of the Start context.
func (c *Core) goLoop(fn func(ctx context.Context)) {
	c.mu.Lock()
	ctx := c.ctx
	c.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn(ctx)
	}()
}

// begin moves an accepting-init peer to activating.
func (c *Core) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StateAcceptingInit {
		return c.wrongStateLocked()
	}
	c.state = StateActivating
	return nil
}

func (c *Core) wrongStateLocked() error {
	switch c.state {
	case StateCoordinator:
		cl, _ := c.reg.Cluster()
		return fmt.Errorf("%w: peer is already active as the coordinator of cluster %s", ErrWrongState, cl.ID)
	case StateNode:
		return fmt.Errorf("%w: peer is already active as a node of cluster %s", ErrWrongState, c.node.ClusterID)
	case StateFailed:
		return fmt.Errorf("%w: peer has failed: %s", ErrWrongState, c.failure)
	case StateActivating:
		return fmt.Errorf("%w: peer is activating; try again", ErrBusy)
	default:
		return fmt.Errorf("%w: peer is %s", ErrWrongState, c.state)
	}
}

// end leaves activating for state (or back to accepting-init on error).
func (c *Core) end(state State, node *NodeConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state, c.node = state, node
}

// Status is a peer's view of itself.
type Status struct {
	State     State
	Failure   string
	Name      string
	Horde     string
	ClusterID string
	VPNIP     netip.Addr
	VPNPubKey wgtypes.Key
	// SigningPubKey is the peer's signing key.
	SigningPubKey []byte
	// StoreID names the shared store the peer runs with ("": its own).
	StoreID string
}

// Status reports the peer's state.
func (c *Core) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{State: c.state, Failure: c.failure, Name: c.cfg.Self.Name, Horde: c.cfg.Self.Horde,
		VPNPubKey: c.cfg.Self.VPNPrivKey.PublicKey(), SigningPubKey: c.cfg.Self.SigningPubKey, StoreID: c.cfg.StoreID}
	switch c.state {
	case StateCoordinator:
		cl, _ := c.reg.Cluster()
		st.ClusterID, st.VPNIP = cl.ID, c.coordinatorVPNIP()
	case StateNode:
		st.ClusterID, st.VPNIP = c.node.ClusterID, c.node.VPNIP
	}
	return st
}

// Registry returns the cluster registry when the peer is the coordinator.
func (c *Core) Registry() (Registry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reg, c.state == StateCoordinator
}

// backoff doubles a retry delay up to the configured maximum.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until ctx ends; false means ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func hostPort(addr netip.Addr, port int) string {
	return netip.AddrPortFrom(addr, uint16(port)).String()
}

// vpnPrefix is ip with the prefix length of the VPN CIDR.
func vpnPrefix(ip netip.Addr, cidr netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(ip, cidr.Bits())
}
