package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// AdminVPNConfig configures RunAdminVPN.
type AdminVPNConfig struct {
	// VPNPrivKey, ListenPort and Address (the admin's VPN IP with the
	// prefix length of the VPN CIDR) are the admin's WireGuard interface.
	VPNPrivKey wgtypes.Key
	ListenPort int
	Address    netip.Prefix
	// Peers are the cluster's active peers as the admin found them (from
	// the pubapi's status), the coordinators among them: the interface
	// starts with them, so that the watch can reach a coordinator inside
	// the VPN.
	Peers []records.Peer
	// Coordinator is the coordinator to watch first; the others are found
	// among the peers, with their vpnapi at VPNAPIPort.
	Coordinator CoordinatorInfo
	VPNAPIPort  int
	// WGEndpoint is where the admin's peers reach its WireGuard; ""
	// tells the coordinator it has none they can reach (it roams).
	WGEndpoint string
	Network    NetworkManager
	// Dialer opens the watch inside the VPN with the admin's signing key.
	Dialer CoordinatorDialer
	// The backoff bounds, as in Config (same defaults).
	MinBackoff, MaxBackoff time.Duration
	// Observe, if set, is told of every change of the admin's state.
	Observe func(AdminVPNState)
	Logger  *slog.Logger
	Now     func() time.Time
}

// AdminVPNState is what RunAdminVPN has done so far.
type AdminVPNState struct {
	// Revision is the revision of the coordinator's watch applied to the
	// interface; 0 before the first (the peers are the pubapi's).
	Revision uint64
	// Peers are the records the interface's peers come from, self
	// included (by VPN IP).
	Peers []records.Peer
	// Watching is the coordinator whose watch is open ("": none).
	Watching string
	// LastError is why the last watch ended, if it failed.
	LastError string
}

// RunAdminVPN keeps an admin's machine on the VPN as a live peer (`fabric
// vpn up`): it brings the interface up with cfg.Peers, then watches a
// coordinator inside the VPN like a node does and applies every change to
// the interface, so that nodes added, removed or re-keyed are reachable
// without a manual step. It reports the endpoint its peers reach it at,
// which they then know, so that a restarted node can reach the admin at
// once. When ctx ends it tells the coordinator it roams from then on (its
// endpoint goes away) and returns nil, leaving the interface to the
// caller; it fails only when the interface cannot be brought up. It keeps
// nothing on disk: a restart begins with a full snapshot.
func RunAdminVPN(ctx context.Context, cfg AdminVPNConfig) error {
	a, err := newAdminVPN(cfg)
	if err != nil {
		return err
	}
	if err := a.cfg.Network.Up(ctx, cfg.VPNPrivKey, cfg.ListenPort, cfg.Address); err != nil {
		return fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	for _, p := range cfg.Peers {
		a.held.peers[p.VPNIP] = p
	}
	if err := a.apply(ctx, a.held); err != nil {
		return fmt.Errorf("adding the cluster's peers: %w", err)
	}
	a.observe()
	co := a.loop(ctx)
	if cfg.WGEndpoint != "" {
		a.leave(context.WithoutCancel(ctx), co)
	}
	return nil
}

// leaveTimeout bounds how long a stopping admin tries to tell the
// coordinator that its endpoint goes away.
const leaveTimeout = 5 * time.Second

// leave tells coordinator co, while the interface is still up, that the
// admin roams from now on: the nodes drop their keepalive toward the
// endpoint it told them, which nobody answers any more. A watch from
// revision 0 is answered at once, after the coordinator recorded its first
// message.
func (a *adminVPN) leave(ctx context.Context, co CoordinatorInfo) {
	ctx, cancel := context.WithTimeout(ctx, leaveTimeout)
	defer cancel()
	w, err := a.cfg.Dialer.Watch(ctx, co, WatchStart{Roaming: true})
	if err == nil {
		_, err = w.Recv()
		w.Close()
	}
	if err != nil {
		a.cfg.Logger.Warn("telling the coordinator this admin's endpoint goes away", "coordinator", co.Name, "err", err)
		return
	}
	a.cfg.Logger.Info("told the coordinator this admin's endpoint goes away", "coordinator", co.Name)
}

// adminVPN is the state of RunAdminVPN.
type adminVPN struct {
	cfg   AdminVPNConfig
	self  netip.Addr
	held  heldPeers
	state AdminVPNState
}

func newAdminVPN(cfg AdminVPNConfig) (*adminVPN, error) {
	if cfg.Network == nil || cfg.Dialer == nil || !cfg.Address.IsValid() {
		return nil, errors.New("admin vpn: Network, Dialer and Address are required")
	}
	defaults := Config{MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff, Logger: cfg.Logger, Now: cfg.Now, VPNAPIPort: cfg.VPNAPIPort}
	setDefaults(&defaults)
	cfg.MinBackoff, cfg.MaxBackoff = defaults.MinBackoff, defaults.MaxBackoff
	cfg.Logger, cfg.Now, cfg.VPNAPIPort = defaults.Logger, defaults.Now, defaults.VPNAPIPort
	return &adminVPN{cfg: cfg, self: cfg.Address.Addr(), held: heldPeers{peers: map[netip.Addr]records.Peer{}}}, nil
}

// loop watches the coordinators until ctx ends, retrying with backoff and
// trying the next coordinator after a failure. The interface keeps its
// last peers meanwhile. It returns the coordinator it watched last.
func (a *adminVPN) loop(ctx context.Context) CoordinatorInfo {
	b := backoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	co := a.cfg.Coordinator
	for ctx.Err() == nil {
		applied, err := a.watchOnce(ctx, co)
		if ctx.Err() != nil {
			return co
		}
		if applied {
			b.reset()
		}
		next := nextCoordinator(coordinatorsOf(a.cfg.Coordinator, a.held, a.cfg.VPNAPIPort), co)
		d := b.next()
		a.cfg.Logger.Warn("watching the coordinator failed; retrying", "in", d, "coordinator", next.Name, "err", err)
		a.state.Watching, a.state.LastError = "", err.Error()
		a.observe()
		co = next
		if !sleep(ctx, d) {
			return co
		}
	}
	return co
}

// watchOnce opens a watch on co and applies its updates until it breaks.
// It reports whether it applied anything.
func (a *adminVPN) watchOnce(ctx context.Context, co CoordinatorInfo) (bool, error) {
	start := WatchStart{Applied: a.held.rev, WGEndpoint: a.cfg.WGEndpoint, Roaming: a.cfg.WGEndpoint == ""}
	w, err := a.cfg.Dialer.Watch(ctx, co, start)
	if err != nil {
		return false, fmt.Errorf("connecting to coordinator %s: %w", co.VPNAPIEndpoint, err)
	}
	defer w.Close()
	a.state.Watching = co.Name
	a.observe()
	age := func() time.Duration { return handshakeAge(ctx, a.cfg.Network, a.cfg.Now, co.VPNPubKey) }
	applied := false
	for {
		u, err := w.Recv()
		if err != nil {
			return applied, fmt.Errorf("watching coordinator %s: %w", co.VPNAPIEndpoint, err)
		}
		if u.Kind == update.Removed {
			return applied, fmt.Errorf("coordinator %s says this admin is no peer of the cluster", co.VPNAPIEndpoint)
		}
		next := a.held
		if u.Kind != update.Unchanged {
			next = a.held.merge(u)
			if err := a.apply(ctx, next); err != nil {
				return applied, fmt.Errorf("applying revision %d: %w", u.Revision, err)
			}
		}
		next.rev = u.Revision
		a.held, applied = next, true
		a.state.Revision, a.state.LastError = u.Revision, ""
		a.observe()
		// Every message is answered, as a node does.
		if err := w.Report(u.Revision, age()); err != nil {
			return applied, fmt.Errorf("reporting revision %d: %w", u.Revision, err)
		}
	}
}

// apply makes the interface's peers those of h.
func (a *adminVPN) apply(ctx context.Context, h heldPeers) error {
	desired, err := wgPeers(h.sorted(), a.self, false)
	if err != nil {
		return err
	}
	return a.cfg.Network.SetPeers(ctx, desired)
}

func (a *adminVPN) observe() {
	if a.cfg.Observe == nil {
		return
	}
	a.state.Peers = a.held.sorted()
	a.cfg.Observe(a.state)
}
