package core

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/view"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// CoordinatorInfo is what a node needs to reach and trust its coordinator.
type CoordinatorInfo struct {
	Name           string      `json:"name"`
	VPNIP          netip.Addr  `json:"vpnIP"`
	VPNPubKey      wgtypes.Key `json:"vpnPubKey"`
	WGEndpoint     string      `json:"wgEndpoint"`
	VPNAPIEndpoint string      `json:"vpnapiEndpoint"`
	TLSPin         []byte      `json:"tlsPin"`
	SigningPubKey  []byte      `json:"signingPubKey"`
}

// NodeActivation is the coordinator's request to a node.
type NodeActivation struct {
	ClusterID   string
	VPNCIDR     netip.Prefix
	NodeVPNIP   netip.Addr
	Coordinator CoordinatorInfo
}

// NodeConfig is what a node persists about its cluster.
type NodeConfig struct {
	ClusterID   string          `json:"clusterID"`
	VPNCIDR     netip.Prefix    `json:"vpnCIDR"`
	VPNIP       netip.Addr      `json:"vpnIP"`
	Coordinator CoordinatorInfo `json:"coordinator"`
}

// Update is a coordinator's answer to a node's watch.
type Update struct {
	Revision uint64
	// Full: Peers is the complete set, replacing the node's.
	Full    bool
	Peers   []records.Peer
	Removed []netip.Addr
	// View is the change of the node's service view, if any.
	View *ViewUpdate
	// SSHUsers is the cluster's whole set of SSH users, when it changed
	// since the node's revision (or with Full).
	SSHUsers *SSHUserSet
}

// ViewUpdate is a change of a node's service view: entries to add or
// replace and keys to remove, or with Full the whole view.
type ViewUpdate struct {
	Full    bool
	Upserts view.View
	Removed []string
}

// ViewApplier applies a node's service view (the node's reeve). It persists
// the view itself; core persists the revision only once both the peers and
// the view are applied.
type ViewApplier interface {
	ApplyView(ctx context.Context, rev uint64, v ViewUpdate) error
}

// UpdateClient is a node's connection to its coordinator's vpnapi.
type UpdateClient interface {
	// WatchUpdates long-polls for the changes after appliedRevision.
	WatchUpdates(ctx context.Context, appliedRevision uint64) (Update, error)
	Close() error
}

// CoordinatorDialer connects a node to its coordinator.
type CoordinatorDialer interface {
	DialCoordinator(ctx context.Context, coordinator CoordinatorInfo) (UpdateClient, error)
}

const (
	keyNodeConfig = "core/node/config"
	keyNodePeers  = "core/node/peers"
)

// nodePeers is the node's last applied view, persisted so that a node that
// restarts without its coordinator keeps its mesh.
type nodePeers struct {
	Revision uint64         `json:"revision"`
	Peers    []records.Peer `json:"peers"`
}

// ActivateAsNode makes this peer a node: it brings up its WireGuard
// interface with the VPN IP the coordinator chose and the coordinator as its
// first peer, persists its cluster, and starts watching the coordinator for
// the rest of the mesh. Repeating the same activation from the same
// coordinator (its answer was lost) succeeds again without change.
func (c *Core) ActivateAsNode(ctx context.Context, req NodeActivation) (records.Activated, error) {
	if err := checkNodeActivation(req); err != nil {
		return records.Activated{}, err
	}
	if c.sameActivation(req) {
		return c.activated(), nil
	}
	if err := c.begin(); err != nil {
		return records.Activated{}, err
	}
	cfg := NodeConfig{ClusterID: req.ClusterID, VPNCIDR: req.VPNCIDR, VPNIP: req.NodeVPNIP, Coordinator: req.Coordinator}
	if err := c.becomeNode(ctx, cfg); err != nil {
		c.end(StateAcceptingInit, nil)
		return records.Activated{}, err
	}
	c.end(StateNode, &cfg)
	if err := c.startNode(cfg); err != nil {
		return records.Activated{}, c.fail(err)
	}
	return c.activated(), nil
}

func checkNodeActivation(req NodeActivation) error {
	co := req.Coordinator
	var problem string
	switch {
	case req.ClusterID == "":
		problem = "empty cluster id"
	case !req.VPNCIDR.IsValid() || !req.VPNCIDR.Contains(req.NodeVPNIP):
		problem = fmt.Sprintf("node vpn ip %s is not inside vpn cidr %s", req.NodeVPNIP, req.VPNCIDR)
	case !req.VPNCIDR.Contains(co.VPNIP) || co.VPNIP == req.NodeVPNIP:
		problem = fmt.Sprintf("bad coordinator vpn ip %s", co.VPNIP)
	case len(co.TLSPin) == 0 || len(co.SigningPubKey) != ed25519.PublicKeySize:
		problem = "coordinator tls pin or signing key missing"
	}
	if problem == "" {
		if _, err := netip.ParseAddrPort(co.WGEndpoint); err != nil {
			problem = fmt.Sprintf("coordinator wireguard endpoint %q: %v", co.WGEndpoint, err)
		} else if _, err := netip.ParseAddrPort(co.VPNAPIEndpoint); err != nil {
			problem = fmt.Sprintf("coordinator vpnapi endpoint %q: %v", co.VPNAPIEndpoint, err)
		}
	}
	if problem != "" {
		return fmt.Errorf("%w: %s", ErrInvalidArgument, problem)
	}
	return nil
}

func (c *Core) sameActivation(req NodeActivation) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node
	return c.state == StateNode && n.ClusterID == req.ClusterID && n.VPNIP == req.NodeVPNIP &&
		n.Coordinator.VPNPubKey == req.Coordinator.VPNPubKey && bytes.Equal(n.Coordinator.TLSPin, req.Coordinator.TLSPin)
}

func (c *Core) activated() records.Activated {
	self := c.cfg.Self
	return records.Activated{
		Name: self.Name, Horde: self.Horde, WGEndpoint: self.WGEndpoint().String(),
		WGPubKey: pubKeyBytes(self.VPNPrivKey), SigningPubKey: self.SigningPubKey,
	}
}

func pubKeyBytes(privKey wgtypes.Key) []byte {
	pub := privKey.PublicKey()
	return pub[:]
}

// becomeNode brings up the network with the coordinator as the only peer
// and commits the node's configuration and role in one transaction.
func (c *Core) becomeNode(ctx context.Context, cfg NodeConfig) error {
	self := c.cfg.Self
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(cfg.VPNIP, cfg.VPNCIDR)); err != nil {
		c.networkDown(ctx)
		return fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	initial := nodePeers{Peers: []records.Peer{coordinatorPeer(cfg.Coordinator)}}
	if err := c.applyPeers(ctx, initial.Peers, cfg.VPNIP, false); err != nil {
		c.networkDown(ctx)
		return fmt.Errorf("adding the coordinator as a wireguard peer: %w", err)
	}
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		if err := store.PutJSON(tx, keyNodeConfig, cfg); err != nil {
			return err
		}
		if err := store.PutJSON(tx, keyNodePeers, initial); err != nil {
			return err
		}
		return store.PutJSON(tx, keyRole, persistedRole{Role: StateNode})
	})
	if err != nil {
		c.networkDown(ctx)
		return fmt.Errorf("persisting node state: %w", err)
	}
	c.log.Info("activated as node", "cluster", cfg.ClusterID, "vpnIP", cfg.VPNIP, "coordinator", cfg.Coordinator.VPNAPIEndpoint)
	return nil
}

func coordinatorPeer(co CoordinatorInfo) records.Peer {
	return records.Peer{
		Name: co.Name, Role: records.RoleCoordinator, VPNIP: co.VPNIP, WGEndpoint: co.WGEndpoint,
		WGPubKey: co.VPNPubKey[:], SigningPubKey: co.SigningPubKey, State: records.StateActive,
	}
}

// restoreNode brings a restarted node back with its last applied peers.
func (c *Core) restoreNode(ctx context.Context) error {
	var cfg NodeConfig
	var np nodePeers
	err := c.cfg.Store.View(func(tx store.Tx) error {
		if err := store.GetJSON(tx, keyNodeConfig, &cfg); err != nil {
			return err
		}
		return store.GetJSON(tx, keyNodePeers, &np)
	})
	if err != nil {
		return fmt.Errorf("reading node state: %w", err)
	}
	self := c.cfg.Self
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(cfg.VPNIP, cfg.VPNCIDR)); err != nil {
		return fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	if err := c.applyPeers(ctx, np.Peers, cfg.VPNIP, false); err != nil {
		return fmt.Errorf("restoring wireguard peers of revision %d: %w", np.Revision, err)
	}
	c.end(StateNode, &cfg)
	return c.startNode(cfg)
}

func (c *Core) startNode(cfg NodeConfig) error {
	c.mu.Lock()
	ctx := c.ctx
	c.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	if err := c.cfg.Services.StartNode(ctx, cfg); err != nil {
		return fmt.Errorf("starting node services: %w", err)
	}
	c.goLoop(func(ctx context.Context) { c.nodeLoop(ctx, cfg) })
	return nil
}

// nodeLoop watches the coordinator and applies each update, retrying with
// backoff while the coordinator is unreachable or an update does not apply.
// The device keeps its last applied peers meanwhile.
func (c *Core) nodeLoop(ctx context.Context, cfg NodeConfig) {
	b := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	var np nodePeers
	if err := c.cfg.Store.View(func(tx store.Tx) error { return store.GetJSON(tx, keyNodePeers, &np) }); err != nil {
		c.log.Error("reading applied peers; node loop stopped", "err", err)
		return
	}
	var client UpdateClient
	defer func() {
		if client != nil {
			client.Close()
		}
	}()
	for ctx.Err() == nil {
		err := c.nodeStep(ctx, cfg, &client, &np)
		if err == nil {
			b.reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		d := b.next()
		c.log.Warn("node update failed; retrying", "in", d, "err", err)
		if !sleep(ctx, d) {
			return
		}
	}
}

// nodeStep runs one watch call and applies its answer to np.
func (c *Core) nodeStep(ctx context.Context, cfg NodeConfig, client *UpdateClient, np *nodePeers) error {
	if *client == nil {
		cl, err := c.cfg.Dialer.DialCoordinator(ctx, cfg.Coordinator)
		if err != nil {
			return fmt.Errorf("connecting to coordinator %s: %w", cfg.Coordinator.VPNAPIEndpoint, err)
		}
		*client = cl
	}
	upd, err := (*client).WatchUpdates(ctx, np.Revision)
	if err != nil {
		return fmt.Errorf("watching coordinator %s: %w", cfg.Coordinator.VPNAPIEndpoint, err)
	}
	if upd.Revision == np.Revision && !upd.Full && len(upd.Peers) == 0 && len(upd.Removed) == 0 && upd.View == nil && upd.SSHUsers == nil {
		return nil
	}
	next := nodePeers{Revision: upd.Revision, Peers: mergePeers(np.Peers, upd)}
	if err := c.applyPeers(ctx, next.Peers, cfg.VPNIP, false); err != nil {
		return fmt.Errorf("applying revision %d: %w", upd.Revision, err)
	}
	if upd.View != nil && c.cfg.Views != nil {
		if err := c.cfg.Views.ApplyView(ctx, upd.Revision, *upd.View); err != nil {
			return fmt.Errorf("applying the service view of revision %d: %w", upd.Revision, err)
		}
	}
	if upd.SSHUsers != nil && c.cfg.Users != nil {
		if err := c.cfg.Users.ApplyUsers(ctx, upd.SSHUsers.Users); err != nil {
			return fmt.Errorf("applying the SSH users of revision %d: %w", upd.Revision, err)
		}
	}
	if err := c.cfg.Store.Update(func(tx store.Tx) error { return store.PutJSON(tx, keyNodePeers, next) }); err != nil {
		return fmt.Errorf("persisting revision %d: %w", upd.Revision, err)
	}
	*np = next
	c.log.Debug("applied update", "revision", upd.Revision, "full", upd.Full, "changed", len(upd.Peers), "removed", len(upd.Removed))
	return nil
}

// mergePeers applies an update to the peers a node holds.
func mergePeers(held []records.Peer, upd Update) []records.Peer {
	byIP := map[netip.Addr]records.Peer{}
	if !upd.Full {
		for _, p := range held {
			byIP[p.VPNIP] = p
		}
	}
	for _, p := range upd.Peers {
		byIP[p.VPNIP] = p
	}
	for _, ip := range upd.Removed {
		delete(byIP, ip)
	}
	out := make([]records.Peer, 0, len(byIP))
	for _, p := range byIP {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b records.Peer) int { return a.VPNIP.Compare(b.VPNIP) })
	return out
}

// NodeConfig returns the node's cluster configuration when it is a node.
func (c *Core) NodeConfig() (NodeConfig, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StateNode {
		return NodeConfig{}, false
	}
	return *c.node, true
}

// AppliedRevision is the revision of the peers a node last applied.
func (c *Core) AppliedRevision() (uint64, error) {
	var np nodePeers
	err := c.cfg.Store.View(func(tx store.Tx) error { return store.GetJSON(tx, keyNodePeers, &np) })
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	return np.Revision, err
}
