package core

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
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
	// OtherCoordinators are the cluster's other active coordinators (at
	// most MaxCoordinators-1): the node has them as peers from the start,
	// so that it fails over to them even before its first update, and it
	// takes a repeated activation from any of them (its first answer was
	// lost with the coordinator that asked).
	OtherCoordinators []CoordinatorInfo
}

// MaxCoordinators bounds the coordinators of a cluster.
const MaxCoordinators = 16

// NodeConfig is what a node persists about its cluster.
type NodeConfig struct {
	ClusterID   string          `json:"clusterID"`
	VPNCIDR     netip.Prefix    `json:"vpnCIDR"`
	VPNIP       netip.Addr      `json:"vpnIP"`
	Coordinator CoordinatorInfo `json:"coordinator"`
}

// ViewApplier applies a node's service view (the node's reeve). It persists
// the view itself; core persists the revision only once both the peers and
// the view are applied.
type ViewApplier interface {
	ApplyView(ctx context.Context, rev uint64, v update.ViewUpdate) error
}

// WatchStart opens a node's watch: the revision it applied and its
// WireGuard endpoint as it is now.
type WatchStart struct {
	Applied    uint64
	WGEndpoint string
	// Roaming is set by an admin whose WireGuard its peers cannot reach:
	// the coordinator forgets the endpoint it recorded for it. Nodes
	// never set it.
	Roaming bool
}

// Watch is a node's open watch on its coordinator.
type Watch interface {
	// Recv returns the next update; it fails when the coordinator was
	// silent for too long.
	Recv() (update.Update, error)
	// Report tells the coordinator the revision applied and the age of
	// the last WireGuard handshake with it (-1: none).
	Report(applied uint64, coordinatorHandshakeAge time.Duration) error
	Close() error
}

// CoordinatorDialer connects a node to its coordinator.
type CoordinatorDialer interface {
	Watch(ctx context.Context, coordinator CoordinatorInfo, start WatchStart) (Watch, error)
}

// A node persists its cluster and the peers it last applied, one key per
// peer, so that applying an update writes what it changed:
//
//	core/node/config       NodeConfig
//	core/node/revision     the revision applied
//	core/node/peers/<ip>   a peer (records.Peer)
const (
	keyNodeConfig   = "core/node/config"
	keyNodeRevision = "core/node/revision"
	prefixNodePeers = "core/node/peers/"
	// keyNodePeersV1 held every peer in one value (before per-peer keys);
	// a node restarted from such a store moves them.
	keyNodePeersV1 = "core/node/peers"
)

// heldPeers is what a node applied: its revision and peers by VPN IP.
type heldPeers struct {
	rev   uint64
	peers map[netip.Addr]records.Peer
}

// merge returns h with the update applied (h is not modified).
func (h heldPeers) merge(u update.Update) heldPeers {
	next := heldPeers{rev: u.Revision, peers: map[netip.Addr]records.Peer{}}
	if u.Kind != update.Full {
		for ip, p := range h.peers {
			next.peers[ip] = p
		}
	}
	for _, p := range u.Peers {
		next.peers[p.VPNIP] = p
	}
	for _, ip := range u.RemovedPeers {
		delete(next.peers, ip)
	}
	return next
}

func (h heldPeers) sorted() []records.Peer {
	out := make([]records.Peer, 0, len(h.peers))
	for _, p := range h.peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b records.Peer) int { return a.VPNIP.Compare(b.VPNIP) })
	return out
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
	crashNodeActivationReceived.Hit()
	if same, err := c.sameActivation(req); err != nil || same {
		return c.activated(), err
	}
	if err := c.begin(); err != nil {
		return records.Activated{}, err
	}
	cfg := NodeConfig{ClusterID: req.ClusterID, VPNCIDR: req.VPNCIDR, VPNIP: req.NodeVPNIP, Coordinator: req.Coordinator}
	if err := c.becomeNode(ctx, cfg, req.OtherCoordinators); err != nil {
		c.end(StateAcceptingInit, nil)
		return records.Activated{}, err
	}
	c.end(StateNode, &cfg)
	crashNodeCommitted.Hit()
	if err := c.startNode(cfg); err != nil {
		return records.Activated{}, c.fail(err)
	}
	crashNodeServicesUp.Hit()
	return c.activated(), nil
}

func checkNodeActivation(req NodeActivation) error {
	problem := ""
	switch {
	case req.ClusterID == "":
		problem = "empty cluster id"
	case !req.VPNCIDR.IsValid() || !req.VPNCIDR.Contains(req.NodeVPNIP):
		problem = fmt.Sprintf("node vpn ip %s is not inside vpn cidr %s", req.NodeVPNIP, req.VPNCIDR)
	case len(req.OtherCoordinators) >= MaxCoordinators:
		problem = fmt.Sprintf("%d other coordinators, at most %d", len(req.OtherCoordinators), MaxCoordinators-1)
	default:
		taken := map[netip.Addr]bool{req.NodeVPNIP: true}
		for i, co := range append([]CoordinatorInfo{req.Coordinator}, req.OtherCoordinators...) {
			problem = checkCoordinatorInfo(co, req.VPNCIDR, taken)
			if problem != "" && i > 0 {
				problem = fmt.Sprintf("other coordinator %d: %s", i, problem)
			}
			if problem != "" {
				break
			}
			taken[co.VPNIP] = true
		}
	}
	if problem != "" {
		return fmt.Errorf("%w: %s", ErrInvalidArgument, problem)
	}
	return nil
}

// checkCoordinatorInfo says what is wrong with co ("": nothing); taken
// are the VPN IPs of the request's other peers.
func checkCoordinatorInfo(co CoordinatorInfo, cidr netip.Prefix, taken map[netip.Addr]bool) string {
	switch {
	case !cidr.Contains(co.VPNIP) || taken[co.VPNIP]:
		return fmt.Sprintf("bad coordinator vpn ip %s", co.VPNIP)
	case len(co.TLSPin) == 0 || len(co.SigningPubKey) != ed25519.PublicKeySize:
		return "coordinator tls pin or signing key missing"
	}
	if _, err := netip.ParseAddrPort(co.WGEndpoint); err != nil {
		return fmt.Sprintf("coordinator wireguard endpoint %q: %v", co.WGEndpoint, err)
	}
	if _, err := netip.ParseAddrPort(co.VPNAPIEndpoint); err != nil {
		return fmt.Sprintf("coordinator vpnapi endpoint %q: %v", co.VPNAPIEndpoint, err)
	}
	return ""
}

// sameActivation reports whether this peer already is the node req would
// make it, activated by req's coordinator or by another coordinator of the
// cluster it knows: the answer to an earlier activation was lost,
// perhaps with the coordinator that asked, and another one asks again.
func (c *Core) sameActivation(req NodeActivation) (bool, error) {
	c.mu.Lock()
	n := c.node
	same := c.state == StateNode && n.ClusterID == req.ClusterID && n.VPNIP == req.NodeVPNIP
	c.mu.Unlock()
	if !same {
		return false, nil
	}
	held, err := c.loadPeers()
	if err != nil {
		return false, fmt.Errorf("reading the node's peers: %w", err)
	}
	for _, co := range c.coordinators(*n, held) {
		if co.VPNPubKey == req.Coordinator.VPNPubKey && bytes.Equal(co.TLSPin, req.Coordinator.TLSPin) {
			return true, nil
		}
	}
	return false, nil
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

// becomeNode brings up the network with the coordinators as the only
// peers and commits the node's configuration and role in one transaction.
func (c *Core) becomeNode(ctx context.Context, cfg NodeConfig, others []CoordinatorInfo) error {
	self := c.cfg.Self
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(cfg.VPNIP, cfg.VPNCIDR)); err != nil {
		c.networkDown(ctx)
		return fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	cos := []records.Peer{coordinatorPeer(cfg.Coordinator)}
	for _, o := range others {
		cos = append(cos, coordinatorPeer(o))
	}
	if err := c.applyPeers(ctx, cos, cfg.VPNIP, false); err != nil {
		c.networkDown(ctx)
		return fmt.Errorf("adding the coordinators as wireguard peers: %w", err)
	}
	crashNodeNetworkUp.Hit()
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		if err := store.PutJSON(tx, keyNodeConfig, cfg); err != nil {
			return err
		}
		if err := forgetPeers(tx); err != nil {
			return err
		}
		for _, co := range cos {
			if err := store.PutJSON(tx, prefixNodePeers+co.VPNIP.String(), co); err != nil {
				return err
			}
		}
		if err := store.PutJSON(tx, keyNodeRevision, uint64(0)); err != nil {
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
		WGPubKey: co.VPNPubKey[:], SigningPubKey: co.SigningPubKey, TLSPin: co.TLSPin, State: records.StateActive,
	}
}

// forgetPeers deletes the persisted peers (both layouts).
func forgetPeers(tx store.Tx) error {
	var keys []string
	err := tx.Scan(prefixNodePeers, func(key string, _ []byte) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range append(keys, keyNodePeersV1) {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// loadPeers reads what the node applied, moving peers persisted in the
// older one-value layout to one key each.
func (c *Core) loadPeers() (heldPeers, error) {
	h := heldPeers{peers: map[netip.Addr]records.Peer{}}
	var v1 struct {
		Revision uint64         `json:"revision"`
		Peers    []records.Peer `json:"peers"`
	}
	err := c.cfg.Store.View(func(tx store.Tx) error {
		switch err := store.GetJSON(tx, keyNodePeersV1, &v1); {
		case err == nil:
			return nil
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if err := store.GetJSON(tx, keyNodeRevision, &h.rev); err != nil {
			return err
		}
		return tx.Scan(prefixNodePeers, func(key string, value []byte) error {
			var p records.Peer
			if err := store.DecodeJSON(key, value, &p); err != nil {
				return err
			}
			h.peers[p.VPNIP] = p
			return nil
		})
	})
	if err != nil || v1.Peers == nil {
		return h, err
	}
	h.rev = v1.Revision
	for _, p := range v1.Peers {
		h.peers[p.VPNIP] = p
	}
	err = c.cfg.Store.Update(func(tx store.Tx) error {
		if err := forgetPeers(tx); err != nil {
			return err
		}
		for _, p := range v1.Peers {
			if err := store.PutJSON(tx, prefixNodePeers+p.VPNIP.String(), p); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, keyNodeRevision, h.rev)
	})
	if err != nil {
		return heldPeers{}, fmt.Errorf("moving the persisted peers to one key each: %w", err)
	}
	return h, nil
}

// restoreNode brings a restarted node back with its last applied peers.
func (c *Core) restoreNode(ctx context.Context) error {
	var cfg NodeConfig
	if err := c.cfg.Store.View(func(tx store.Tx) error { return store.GetJSON(tx, keyNodeConfig, &cfg) }); err != nil {
		return fmt.Errorf("reading node state: %w", err)
	}
	held, err := c.loadPeers()
	if err != nil {
		return fmt.Errorf("reading node state: %w", err)
	}
	self := c.cfg.Self
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(cfg.VPNIP, cfg.VPNCIDR)); err != nil {
		return fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	if err := c.applyPeers(ctx, held.sorted(), cfg.VPNIP, false); err != nil {
		return fmt.Errorf("restoring wireguard peers of revision %d: %w", held.rev, err)
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
	loopCtx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	c.stopNode = cancel
	c.mu.Unlock()
	c.known.Store(nil)
	c.goLoop(func(context.Context) { c.nodeLoop(loopCtx, cfg) })
	return nil
}

// errRemoved ends the node loop: the coordinator removed this node.
var errRemoved = errors.New("removed from the cluster by the coordinator")

// nodeLoop watches the coordinator and applies each update, retrying with
// backoff while the coordinator is unreachable or an update does not apply.
// The device keeps its last applied peers meanwhile.
func (c *Core) nodeLoop(ctx context.Context, cfg NodeConfig) {
	b := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	held, err := c.loadPeers()
	if err != nil {
		c.log.Error("reading applied peers; node loop stopped", "err", err)
		return
	}
	c.knowCoordinators(cfg, held)
	co := cfg.Coordinator
	for ctx.Err() == nil {
		applied, err := c.watchOnce(ctx, cfg, co, &held)
		if errors.Is(err, errRemoved) {
			c.leave(ctx, cfg, "the coordinator's watch said so")
			return
		}
		if ctx.Err() != nil {
			return
		}
		if applied {
			b.reset()
		}
		next := nextCoordinator(c.coordinators(cfg, held), co)
		d := b.next()
		c.log.Warn("watching the coordinator failed; retrying", "in", d, "coordinator", next.Name, "err", err)
		co = next
		if !sleep(ctx, d) {
			return
		}
	}
}

// coordinators lists the coordinators a node can watch: the one that
// activated it, then every other coordinator among its peers.
func (c *Core) coordinators(cfg NodeConfig, held heldPeers) []CoordinatorInfo {
	return coordinatorsOf(cfg.Coordinator, held, c.cfg.VPNAPIPort)
}

// coordinatorsOf is first, then every other coordinator among the held
// peers (coordinator peers carry their TLS pin and signing key), in VPN IP
// order, with their vpnapi at vpnapiPort.
func coordinatorsOf(first CoordinatorInfo, held heldPeers, vpnapiPort int) []CoordinatorInfo {
	out := []CoordinatorInfo{first}
	for _, p := range held.sorted() {
		if p.VPNIP == first.VPNIP {
			continue
		}
		if co, ok := coordinatorInfo(p, vpnapiPort); ok {
			out = append(out, co)
		}
	}
	return out
}

// coordinatorInfo is how a node reaches the coordinator of record p; false
// if p is no coordinator or lacks its TLS pin or a valid VPN key.
func (c *Core) coordinatorInfo(p records.Peer) (CoordinatorInfo, bool) {
	return coordinatorInfo(p, c.cfg.VPNAPIPort)
}

// coordinatorInfo is how a peer reaches the coordinator of record p, whose
// vpnapi listens at vpnapiPort on its VPN IP.
func coordinatorInfo(p records.Peer, vpnapiPort int) (CoordinatorInfo, bool) {
	if p.Role != records.RoleCoordinator || len(p.TLSPin) == 0 {
		return CoordinatorInfo{}, false
	}
	key, err := wgtypes.NewKey(p.WGPubKey)
	if err != nil {
		return CoordinatorInfo{}, false
	}
	return CoordinatorInfo{
		Name: p.Name, VPNIP: p.VPNIP, VPNPubKey: key, WGEndpoint: p.WGEndpoint,
		VPNAPIEndpoint: hostPort(p.VPNIP, vpnapiPort), TLSPin: p.TLSPin, SigningPubKey: p.SigningPubKey,
	}, true
}

// nextCoordinator is the coordinator after cur in list (the first when cur
// is not in it): a node that cannot watch one coordinator tries the next.
func nextCoordinator(list []CoordinatorInfo, cur CoordinatorInfo) CoordinatorInfo {
	for i, co := range list {
		if co.VPNIP == cur.VPNIP {
			return list[(i+1)%len(list)]
		}
	}
	return list[0]
}

// Coordinators returns the coordinators this node knows, the one that
// activated it first (nil when the peer is no node).
func (c *Core) Coordinators() []CoordinatorInfo {
	cfg, ok := c.NodeConfig()
	if !ok {
		return nil
	}
	if known := c.known.Load(); known != nil {
		return slices.Clone(*known)
	}
	held, err := c.loadPeers()
	if err != nil {
		return []CoordinatorInfo{cfg.Coordinator}
	}
	return c.coordinators(cfg, held)
}

// knowCoordinators keeps the coordinators among held for Coordinators.
func (c *Core) knowCoordinators(cfg NodeConfig, held heldPeers) {
	cos := c.coordinators(cfg, held)
	c.known.Store(&cos)
}

// changesCoordinators reports whether applying u may have changed the
// coordinators the node knows.
func (c *Core) changesCoordinators(u update.Update) bool {
	if u.Kind == update.Full {
		return true
	}
	for _, p := range u.Peers {
		if p.Role == records.RoleCoordinator {
			return true
		}
	}
	known := c.known.Load()
	for _, ip := range u.RemovedPeers {
		if known == nil || slices.ContainsFunc(*known, func(co CoordinatorInfo) bool { return co.VPNIP == ip }) {
			return true
		}
	}
	return false
}

// watchOnce opens a watch on coordinator co and applies its updates until
// it breaks. It reports whether it applied anything.
func (c *Core) watchOnce(ctx context.Context, cfg NodeConfig, co CoordinatorInfo, held *heldPeers) (bool, error) {
	w, err := c.cfg.Dialer.Watch(ctx, co, WatchStart{Applied: held.rev, WGEndpoint: c.cfg.Self.WGEndpoint().String()})
	if err != nil {
		return false, fmt.Errorf("connecting to coordinator %s: %w", co.VPNAPIEndpoint, err)
	}
	defer w.Close()
	applied := false
	for {
		u, err := w.Recv()
		if err != nil {
			return applied, fmt.Errorf("watching coordinator %s: %w", co.VPNAPIEndpoint, err)
		}
		if u.Kind == update.Removed {
			return applied, errRemoved
		}
		if err := c.applyUpdate(ctx, cfg, held, u); err != nil {
			return applied, err
		}
		if c.changesCoordinators(u) {
			c.knowCoordinators(cfg, *held)
		}
		applied = true
		// Every message is answered, a keepalive too: the report is the
		// node's sign of life (see vpnapi.DefaultKeepalive).
		if err := w.Report(held.rev, c.coordinatorHandshakeAge(ctx, co)); err != nil {
			return applied, fmt.Errorf("reporting revision %d: %w", held.rev, err)
		}
	}
}

// coordinatorHandshakeAge is the age of the last WireGuard handshake with
// the coordinator, -1 when unknown.
func (c *Core) coordinatorHandshakeAge(ctx context.Context, co CoordinatorInfo) time.Duration {
	return handshakeAge(ctx, c.cfg.Network, c.cfg.Now, co.VPNPubKey)
}

// handshakeAge is the age of network's last WireGuard handshake with
// peer, -1 when unknown.
func handshakeAge(ctx context.Context, network NetworkManager, now func() time.Time, peer wgtypes.Key) time.Duration {
	hr, ok := network.(HandshakeReader)
	if !ok {
		return -1
	}
	last, err := hr.LastHandshake(ctx, peer)
	if err != nil || last.IsZero() {
		return -1
	}
	return now().Sub(last)
}

// applyUpdate applies one update to the device, the view and the store.
// The revision is persisted only after the device and the view are
// configured, so a crash replays the update.
func (c *Core) applyUpdate(ctx context.Context, cfg NodeConfig, held *heldPeers, u update.Update) error {
	if u.Kind == update.Unchanged {
		if u.Revision == held.rev {
			return nil
		}
		err := c.cfg.Store.Update(func(tx store.Tx) error { return store.PutJSON(tx, keyNodeRevision, u.Revision) })
		if err != nil {
			return fmt.Errorf("persisting revision %d: %w", u.Revision, err)
		}
		held.rev = u.Revision
		return nil
	}
	next := *held
	if peersChanged(u) {
		next = held.merge(u)
		if err := c.applyPeers(ctx, next.sorted(), cfg.VPNIP, false); err != nil {
			return fmt.Errorf("applying revision %d: %w", u.Revision, err)
		}
	}
	next.rev = u.Revision
	if u.View.Kind != update.ViewUnchanged && c.cfg.Views != nil {
		if err := c.cfg.Views.ApplyView(ctx, u.Revision, u.View); err != nil {
			return fmt.Errorf("applying the service view of revision %d: %w", u.Revision, err)
		}
	}
	if err := c.applyUsers(ctx, u); err != nil {
		return err
	}
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		if u.Kind == update.Full {
			if err := forgetPeers(tx); err != nil {
				return err
			}
		}
		for _, p := range u.Peers {
			if err := store.PutJSON(tx, prefixNodePeers+p.VPNIP.String(), p); err != nil {
				return err
			}
		}
		for _, ip := range u.RemovedPeers {
			if err := tx.Delete(prefixNodePeers + ip.String()); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, keyNodeRevision, u.Revision)
	})
	if err != nil {
		return fmt.Errorf("persisting revision %d: %w", u.Revision, err)
	}
	*held = next
	c.log.Debug("applied update", "revision", u.Revision, "kind", u.Kind, "changed", len(u.Peers), "removed", len(u.RemovedPeers))
	return nil
}

// LeaveCluster takes this node out of its cluster at the coordinator's
// request: req must name this node's membership and signature must be the
// coordinator's signature of LeaveMessage(req).
func (c *Core) LeaveCluster(ctx context.Context, req LeaveRequest, signature []byte) error {
	cfg, ok := c.NodeConfig()
	switch {
	case !ok:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.wrongStateLocked()
	case req.ClusterID != cfg.ClusterID || req.NodeVPNIP != cfg.VPNIP:
		return fmt.Errorf("%w: this peer is node %s of cluster %s, not node %s of cluster %s",
			ErrWrongState, cfg.VPNIP, cfg.ClusterID, req.NodeVPNIP, req.ClusterID)
	case !slices.ContainsFunc(c.Coordinators(), func(co CoordinatorInfo) bool {
		return len(co.SigningPubKey) == ed25519.PublicKeySize && ed25519.Verify(co.SigningPubKey, LeaveMessage(req), signature)
	}):
		return fmt.Errorf("%w: the request to leave is not signed by a coordinator of this node's cluster", ErrInvalidArgument)
	}
	c.leave(ctx, cfg, "the coordinator asked")
	return nil
}

// leave takes a removed node out of its cluster: its watch stops, its
// interface goes down, its cluster is forgotten (one transaction), the SSH
// users it manages are locked, and the daemon gives it a new identity, back
// in accepting-init. Only the first of concurrent calls does it.
func (c *Core) leave(ctx context.Context, cfg NodeConfig, why string) {
	c.mu.Lock()
	if c.state != StateNode {
		c.mu.Unlock()
		return
	}
	c.state = StateActivating
	stop := c.stopNode
	c.mu.Unlock()
	stop()
	c.log.Warn("this node was removed from its cluster; leaving it", "cluster", cfg.ClusterID, "vpnIP", cfg.VPNIP, "why", why)
	c.networkDown(ctx)
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		if err := forgetPeers(tx); err != nil {
			return err
		}
		for _, k := range []string{keyNodeConfig, keyNodeRevision, keyRole} {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.fail(fmt.Errorf("forgetting the cluster after removal: %w", err))
		return
	}
	if c.cfg.Users != nil {
		// The cluster's users lose this machine with it: lock them all.
		if err := c.cfg.Users.ApplyUsers(context.WithoutCancel(ctx), nil); err != nil {
			c.log.Warn("locking the cluster's SSH users after removal", "err", err)
		}
	}
	c.end(StateAcceptingInit, nil)
	if err := c.cfg.Services.Removed(context.WithoutCancel(ctx)); err != nil {
		c.fail(fmt.Errorf("leaving the cluster after removal: %w", err))
	}
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
	var rev uint64
	err := c.cfg.Store.View(func(tx store.Tx) error { return store.GetJSON(tx, keyNodeRevision, &rev) })
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	return rev, err
}
