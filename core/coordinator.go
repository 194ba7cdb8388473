package core

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
)

// NodeActivator reaches a node's pubapi, proving the bootstrap key.
type NodeActivator interface {
	// GetNodeState asks the node who it is.
	GetNodeState(ctx context.Context, nodePublicEndpoint string) (NodeState, error)
	// ActivateAsNode makes the node a node of this cluster.
	ActivateAsNode(ctx context.Context, nodePublicEndpoint string, req NodeActivation) (records.Activated, error)
	// Leave tells the node that it is no longer the node at nodeVPNIP of
	// the cluster: it leaves (the call is signed by the coordinator).
	Leave(ctx context.Context, nodePublicEndpoint string, req LeaveRequest) error
}

// LeaveRequest tells a node to leave its cluster. VPN IPs are never given
// twice, so the cluster and the VPN IP name one membership of one machine.
type LeaveRequest struct {
	ClusterID string
	NodeVPNIP netip.Addr
}

// LeaveMessage is what the coordinator signs to tell a node to leave.
func LeaveMessage(req LeaveRequest) []byte {
	return []byte("fabric-leave\x00" + req.ClusterID + "\x00" + req.NodeVPNIP.String())
}

// NodeState is what a peer says about itself before it is activated.
type NodeState struct {
	State     State
	ClusterID string
	// VPNIP is set once the peer is a node or a coordinator.
	VPNIP         netip.Addr
	Name          string
	Horde         string
	VPNPubKey     []byte
	SigningPubKey []byte
	// StoreID names the shared store the peer runs with ("" for its own
	// bbolt file).
	StoreID string
}

// CoordinatorActivation is the admin's request to create a cluster.
type CoordinatorActivation struct {
	VPNCIDR             netip.Prefix
	NodePublicEndpoints []string
	AdminName           string
	AdminSigningPubKey  []byte
	AdminVPNPubKey      []byte
	// Rules is the connectivity rules file (YAML), RulesName its name for
	// error messages; empty for the default rules.
	Rules, RulesName string
	// Users is the SSH users file (YAML, see internal/sshusers), UsersName
	// its name for error messages; empty for no users.
	Users, UsersName string
	// AdminProof is the admin's signature of ActivationProofMessage with
	// this coordinator's TLS pin. A coordinator already active answers a
	// repeated activation (its first answer was lost) only with it.
	AdminProof []byte
}

// ActivationProofMessage is what an admin signs to show a coordinator that
// it holds the admin key of a request: it names the coordinator by the pin
// of its TLS certificate, so no other coordinator can use the signature.
func ActivationProofMessage(coordinatorTLSPin, adminVPNPubKey []byte) []byte {
	return []byte("fabric-activate\x00" + string(coordinatorTLSPin) + "\x00" + string(adminVPNPubKey))
}

// Event is one step of an activation, streamed to the admin.
type Event struct {
	// Started is set on the first event of ActivateAsCoordinator, once the
	// cluster exists.
	Started *Started
	// Progress is a line for the admin to read.
	Progress string
	// Node is the outcome of one node's activation.
	Node *NodeResult
}

// Started describes a new cluster.
type Started struct {
	Cluster records.Cluster
	Admin   records.Peer
	// Resumed is set when the cluster already existed: the same admin
	// repeated its activation.
	Resumed bool
}

// NodeResult is the outcome of one node's activation.
type NodeResult struct {
	NodePublicEndpoint string
	Peer               records.Peer
	// Err is nil when the node is active.
	Err error
	// Retrying is set with Err when the failure may pass (the node did
	// not answer, the store could not write): the coordinator retries the
	// node on its own, with backoff, also after a restart.
	Retrying bool
}

// ActivationResult sums up an activation.
type ActivationResult struct {
	Activated, Failed int
}

// ActivateAsCoordinator makes this peer the coordinator of a new cluster:
// it takes the first VPN IP, brings up its WireGuard interface, records the
// cluster, the admin and the nodes to activate, starts the coordinator
// services and then activates every node concurrently. A node that fails
// does not stop the others; its error is reported in an Event and recorded
// so that ActivateAdditionalNodes can retry it (a failure that may pass is
// retried by the coordinator itself). The node activations run to
// completion even if ctx ends (the admin disconnected), and after a crash
// the restarted coordinator finishes them.
//
// On a coordinator already active, the same request by the admin it
// committed (same admin keys, proven by AdminProof, same VPN CIDR, name and
// rules) resumes the activation whose answer was lost: the coordinator
// answers with the cluster again and activates the nodes of the request
// (those already active are reported as such). Anyone else is refused.
func (c *Core) ActivateAsCoordinator(ctx context.Context, req CoordinatorActivation, emit func(Event)) (ActivationResult, error) {
	endpoints, users, err := c.checkCoordinatorActivation(req)
	if err != nil {
		return ActivationResult{}, err
	}
	if err := c.begin(); err != nil {
		if admin, ok, rerr := c.resumable(req); ok || rerr != nil {
			return c.resumeActivation(ctx, admin, endpoints, emit, rerr)
		}
		return ActivationResult{}, err
	}
	admin, err := c.becomeCoordinator(ctx, req, users, endpoints)
	if err != nil {
		c.end(StateAcceptingInit, nil)
		return ActivationResult{}, err
	}
	c.end(StateCoordinator, nil)
	crashCoordinatorCommitted.Hit()
	emit(Event{Started: &Started{Cluster: c.mustCluster(), Admin: admin}})
	emit(Event{Progress: fmt.Sprintf("coordinator %s is up at VPN IP %s; admin %s has VPN IP %s",
		c.cfg.Self.Name, c.coordinatorVPNIP(), admin.Name, admin.VPNIP)})
	crashCoordinatorStartedSent.Hit()
	if err := c.startCoordinator(); err != nil {
		return ActivationResult{}, c.fail(err)
	}
	crashCoordinatorServicesUp.Hit()
	return c.activateNodes(context.WithoutCancel(ctx), endpoints, emit), nil
}

// resumable reports whether req repeats the activation of this active
// coordinator by the admin it committed. A request with that admin's keys
// that differs otherwise, or lacks a valid proof, gives an error.
func (c *Core) resumable(req CoordinatorActivation) (records.Peer, bool, error) {
	if _, ok := c.Registry(); !ok {
		return records.Peer{}, false, nil
	}
	var admin records.Peer
	_, peers := c.reg.Peers()
	for _, p := range peers {
		if p.Role == records.RoleAdmin && p.State == records.StateActive && bytes.Equal(p.SigningPubKey, req.AdminSigningPubKey) {
			admin = p
		}
	}
	if !admin.VPNIP.IsValid() {
		return records.Peer{}, false, nil
	}
	cl := c.mustCluster()
	var differs string
	switch {
	case !ed25519.Verify(req.AdminSigningPubKey, ActivationProofMessage(c.cfg.Self.TLSPin, req.AdminVPNPubKey), req.AdminProof):
		return records.Peer{}, false, fmt.Errorf("%w: the request names the admin key of cluster %s but does not prove it (no valid admin proof for this coordinator)",
			ErrWrongState, cl.ID)
	case !bytes.Equal(admin.WGPubKey, req.AdminVPNPubKey):
		differs = "the admin's WireGuard key"
	case admin.Name != req.AdminName:
		differs = fmt.Sprintf("the admin name (%q, not %q)", admin.Name, req.AdminName)
	case cl.VPNCIDR != req.VPNCIDR:
		differs = fmt.Sprintf("the VPN CIDR (%s, not %s)", cl.VPNCIDR, req.VPNCIDR)
	case cl.Rules != req.Rules:
		differs = "the rules file"
	}
	if differs != "" {
		return records.Peer{}, false, fmt.Errorf("%w: this admin activated cluster %s with another %s; repeat the activation as it was, or use 'fabric add-nodes'",
			ErrWrongState, cl.ID, strings.TrimPrefix(differs, "the "))
	}
	return admin, true, nil
}

// resumeActivation answers a repeated activation: the cluster as it is,
// then the outcome of every node of the request.
func (c *Core) resumeActivation(ctx context.Context, admin records.Peer, endpoints []string, emit func(Event), err error) (ActivationResult, error) {
	if err != nil {
		return ActivationResult{}, err
	}
	if err := c.recordIntents(endpoints); err != nil {
		return ActivationResult{}, err
	}
	cl := c.mustCluster()
	c.log.Info("resuming an activation whose answer was lost", "cluster", cl.ID, "admin", admin.Name, "nodes", len(endpoints))
	emit(Event{Started: &Started{Cluster: cl, Admin: admin, Resumed: true}})
	emit(Event{Progress: fmt.Sprintf("cluster %s already exists with admin %s at VPN IP %s; resuming its activation",
		cl.ID, admin.Name, admin.VPNIP)})
	crashCoordinatorResumed.Hit()
	return c.activateNodes(context.WithoutCancel(ctx), endpoints, emit), nil
}

func (c *Core) checkCoordinatorActivation(req CoordinatorActivation) ([]string, []records.SSHUser, error) {
	if _, err := records.ParseVPNCIDR(req.VPNCIDR.String()); err != nil || !req.VPNCIDR.IsValid() {
		return nil, nil, fmt.Errorf("%w: vpn cidr: %v", ErrInvalidArgument, err)
	}
	if req.VPNCIDR.Contains(c.cfg.Self.PublicEndpoint.Addr()) {
		return nil, nil, fmt.Errorf("%w: vpn cidr %s contains the coordinator's public IP %s; choose a range that no peer uses on its network",
			ErrInvalidArgument, req.VPNCIDR, c.cfg.Self.PublicEndpoint.Addr())
	}
	if len(req.AdminSigningPubKey) != ed25519.PublicKeySize || len(req.AdminVPNPubKey) != 32 {
		return nil, nil, fmt.Errorf("%w: admin keys must be a 32-byte ed25519 and a 32-byte WireGuard public key", ErrInvalidArgument)
	}
	if req.AdminName == "" {
		return nil, nil, fmt.Errorf("%w: admin name is empty", ErrInvalidArgument)
	}
	if _, err := rules.ParseOrDefault(req.RulesName, req.Rules); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	users, err := sshusers.ParseOrNone(req.UsersName, req.Users)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	endpoints, err := c.checkNodeEndpoints(req.NodePublicEndpoints, req.VPNCIDR)
	return endpoints, users, err
}

// MaxNodesPerActivation is the number of node endpoints one activation or
// add-nodes request may list.
const MaxNodesPerActivation = 1024

// checkNodeEndpoints parses the endpoints and rejects too many, duplicates,
// the coordinator itself and addresses inside the VPN.
func (c *Core) checkNodeEndpoints(in []string, vpnCIDR netip.Prefix) ([]string, error) {
	if len(in) > MaxNodesPerActivation {
		return nil, fmt.Errorf("%w: %d node endpoints: at most %d per request (add the others with more fabric add-nodes)", ErrInvalidArgument, len(in), MaxNodesPerActivation)
	}
	seen := map[netip.AddrPort]bool{}
	var out []string
	for _, s := range in {
		ap, err := netip.ParseAddrPort(s)
		if err != nil || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
			return nil, fmt.Errorf("%w: node endpoint %q: want IP:PORT", ErrInvalidArgument, s)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		switch {
		case seen[ap]:
			return nil, fmt.Errorf("%w: node endpoint %s is listed twice", ErrInvalidArgument, ap)
		case ap == c.cfg.Self.PublicEndpoint:
			return nil, fmt.Errorf("%w: node endpoint %s is the coordinator itself", ErrInvalidArgument, ap)
		case vpnCIDR.Contains(ap.Addr()):
			return nil, fmt.Errorf("%w: node endpoint %s is inside the vpn cidr %s", ErrInvalidArgument, ap, vpnCIDR)
		}
		seen[ap] = true
		out = append(out, ap.String())
	}
	return out, nil
}

// becomeCoordinator brings up the network and commits the cluster, the
// coordinator, the admin, the SSH users, the intents to activate the nodes
// and the role in one transaction. On error nothing is committed and the
// interface is removed.
func (c *Core) becomeCoordinator(ctx context.Context, req CoordinatorActivation, users []records.SSHUser, endpoints []string) (records.Peer, error) {
	id, err := newClusterID()
	if err != nil {
		return records.Peer{}, err
	}
	self := c.cfg.Self
	vpnIP := req.VPNCIDR.Addr().Next()
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(vpnIP, req.VPNCIDR)); err != nil {
		c.networkDown(ctx)
		return records.Peer{}, fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	crashCoordinatorNetworkUp.Hit()
	coordinator := records.Peer{
		Name: self.Name, Horde: self.Horde,
		PublicEndpoint: self.PublicEndpoint.String(), WGEndpoint: self.WGEndpoint().String(),
		WGPubKey: pubKeyBytes(self.VPNPrivKey), SigningPubKey: self.SigningPubKey, TLSPin: self.TLSPin,
	}
	admin := records.Peer{Name: req.AdminName, SigningPubKey: req.AdminSigningPubKey, WGPubKey: req.AdminVPNPubKey}
	recordIntents := intentsTx(endpoints, c.cfg.Now())
	persistRole := func(tx store.Tx) error {
		if err := recordIntents(tx); err != nil {
			return err
		}
		return store.PutJSON(tx, keyRole, persistedRole{Role: StateCoordinator})
	}
	extra := persistRole
	if c.cfg.SharedRegistry {
		// The registry is in the cluster's store, the role and the
		// intents in this peer's: a crash between the two leaves a
		// registry whose coordinator record has this peer's key, which
		// Start adopts (the admin's repeated activation records the
		// intents again).
		extra = nil
	}
	peers, err := c.reg.Init(records.Cluster{ID: id, VPNCIDR: req.VPNCIDR, Rules: req.Rules}, coordinator, []records.Peer{admin}, users, extra)
	if err == nil && c.cfg.SharedRegistry {
		err = c.cfg.Store.Update(persistRole)
	}
	if err != nil {
		c.networkDown(ctx)
		return records.Peer{}, err
	}
	c.log.Info("activated as coordinator", "cluster", id, "vpnIP", vpnIP, "vpnCIDR", req.VPNCIDR)
	return peers[1], nil
}

func (c *Core) networkDown(ctx context.Context) {
	if err := c.cfg.Network.Down(context.WithoutCancel(ctx)); err != nil {
		c.log.Warn("removing the vpn interface after a failed activation", "err", err)
	}
}

func newClusterID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making cluster id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (c *Core) mustCluster() records.Cluster {
	cl, _ := c.reg.Cluster()
	return cl
}

// restoreCoordinator brings a restarted coordinator back.
func (c *Core) restoreCoordinator(ctx context.Context) error {
	cl, ok := c.reg.Cluster()
	if !ok {
		return errors.New("role is coordinator but the registry is empty")
	}
	me, err := c.coordinatorRecord()
	if err != nil {
		return err
	}
	self := c.cfg.Self
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(me.VPNIP, cl.VPNCIDR)); err != nil {
		return fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	c.end(StateCoordinator, nil)
	if err := c.startCoordinator(); err != nil {
		return err
	}
	intents, err := c.loadIntents()
	if err != nil {
		return err
	}
	crashRecoveryLoaded.Hit()
	if len(intents) > 0 {
		c.log.Info("finishing the activation of nodes the coordinator had not brought to an outcome", "nodes", len(intents))
		c.acts.schedule(intents, c.cfg.RecoveryMinBackoff, c.cfg.Now())
	}
	return nil
}

// coordinatorRecord is this coordinator's own record: every coordinator of
// a cluster shares the registry and finds itself by its signing key.
func (c *Core) coordinatorRecord() (records.Peer, error) {
	me, ok := c.reg.LookupSigningKey(c.cfg.Self.SigningPubKey)
	switch {
	case !ok:
		return records.Peer{}, errors.New("the registry has no record of this coordinator's signing key")
	case me.Role != records.RoleCoordinator || me.State != records.StateActive:
		return records.Peer{}, fmt.Errorf("the registry's record of this peer is %s %s (%s), not an active coordinator", me.State, me.Role, me.VPNIP)
	}
	return me, nil
}

// coordinatorVPNIP is this coordinator's VPN IP (a zero address if the
// registry does not know it).
func (c *Core) coordinatorVPNIP() netip.Addr {
	me, _ := c.coordinatorRecord()
	return me.VPNIP
}

// startCoordinator starts the services and the loop that keeps the
// coordinator's own WireGuard peers in step with the registry.
func (c *Core) startCoordinator() error {
	c.mu.Lock()
	ctx := c.ctx
	c.mu.Unlock()
	if ctx == nil {
		ctx = context.Background()
	}
	me, err := c.coordinatorRecord()
	if err != nil {
		return err
	}
	feed, err := c.cfg.Services.StartCoordinator(ctx, me)
	if err != nil {
		return fmt.Errorf("starting coordinator services: %w", err)
	}
	c.goLoop(func(ctx context.Context) { c.coordinatorPeersLoop(ctx, feed, me.VPNIP) })
	c.goLoop(c.recoveryLoop)
	return nil
}

// coordinatorPeersLoop keeps the coordinator's WireGuard peers in step
// with its records, through its feed like a node: every active peer, and
// the nodes being activated.
func (c *Core) coordinatorPeersLoop(ctx context.Context, feed Feed, self netip.Addr) {
	b := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	held := heldPeers{peers: map[netip.Addr]records.Peer{}}
	for {
		u, err := feed.Next(ctx, self, held.rev, 0)
		if err == nil && u.Kind == update.Removed {
			c.leaveAsCoordinator(ctx)
			return
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("following the coordinator's records; will retry", "err", err)
			if !sleep(ctx, b.next()) {
				return
			}
			continue
		}
		next := held
		if peersChanged(u) {
			// Reading and diffing the whole device costs its number of
			// peers: only when they changed (not for a view change).
			next = held.merge(u)
			err = c.applyPeers(ctx, next.sorted(), self, true)
		} else {
			next.rev = u.Revision
		}
		if err == nil {
			err = c.applyUsers(ctx, u)
		}
		if err != nil {
			c.log.Warn("applying the coordinator's peers or SSH users; will retry", "revision", u.Revision, "err", err)
			if !sleep(ctx, b.next()) {
				return
			}
			continue
		}
		b.reset()
		held = next
		if c.cfg.Applied != nil {
			c.cfg.Applied(self, held.rev)
		}
	}
}

// peersChanged reports whether u changes the WireGuard peers held before
// it (a full snapshot replaces them).
func peersChanged(u update.Update) bool {
	return u.Kind == update.Full || len(u.Peers) > 0 || len(u.RemovedPeers) > 0
}

func (c *Core) applyPeers(ctx context.Context, peers []records.Peer, self netip.Addr, pending bool) error {
	desired, err := wgPeers(peers, self, pending)
	if err != nil {
		return err
	}
	return c.cfg.Network.SetPeers(ctx, desired)
}

// ActivateAdditionalNodes activates more nodes, or retries failed ones, on
// an active coordinator. Nodes already active are reported as such.
func (c *Core) ActivateAdditionalNodes(ctx context.Context, nodePublicEndpoints []string, emit func(Event)) (ActivationResult, error) {
	if _, ok := c.Registry(); !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return ActivationResult{}, c.wrongStateLocked()
	}
	endpoints, err := c.checkNodeEndpoints(nodePublicEndpoints, c.mustCluster().VPNCIDR)
	if err != nil {
		return ActivationResult{}, err
	}
	if len(endpoints) == 0 {
		return ActivationResult{}, fmt.Errorf("%w: no node endpoints given", ErrInvalidArgument)
	}
	if err := c.recordIntents(endpoints); err != nil {
		return ActivationResult{}, err
	}
	crashAddNodesAccepted.Hit()
	return c.activateNodes(context.WithoutCancel(ctx), endpoints, emit), nil
}

// activateNodes activates the nodes concurrently and reports each outcome.
// Their intents are recorded; it deletes those whose outcome is final and
// leaves the others to the recovery loop.
func (c *Core) activateNodes(ctx context.Context, endpoints []string, emit func(Event)) ActivationResult {
	if len(endpoints) > 0 {
		emit(Event{Progress: fmt.Sprintf("activating %d node(s), up to %d at a time", len(endpoints), c.cfg.ActivationConcurrency)})
	}
	var (
		mu  sync.Mutex
		res ActivationResult
		wg  sync.WaitGroup
	)
	for _, ep := range endpoints {
		wg.Add(1)
		c.acts.sem <- struct{}{}
		go func() {
			defer func() { <-c.acts.sem; wg.Done() }()
			r := c.activateNodeOnce(ctx, ep)
			mu.Lock()
			defer mu.Unlock()
			if r.Err != nil {
				res.Failed++
			} else {
				res.Activated++
			}
			emit(Event{Node: &r})
		}()
	}
	wg.Wait()
	crashNodesDone.Hit()
	c.flushSettled()
	return res
}

// activateNode runs one node's activation and records its outcome. Once
// the node has answered, a failure that may pass (the node restarted, its
// answer was lost, the store could not write) is retried within
// NodeActivationTimeout, with the same VPN IP; a node that never answered
// fails at once and is left to the recovery loop.
func (c *Core) activateNode(ctx context.Context, endpoint string) NodeResult {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.NodeActivationTimeout)
	defer cancel()
	b := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	var (
		peer      records.Peer
		err       error
		contacted bool
	)
	for {
		peer, err = c.tryActivateNode(ctx, endpoint, &contacted)
		if err == nil || !isRetryable(err) || !contacted || ctx.Err() != nil {
			break
		}
		c.log.Info("node activation interrupted; trying again", "node", endpoint, "err", err)
		if !sleep(ctx, b.next()) {
			break
		}
	}
	if errors.Is(err, records.ErrAlreadyActive) {
		c.log.Info("node already active", "node", endpoint, "name", peer.Name)
		return NodeResult{NodePublicEndpoint: endpoint, Peer: peer}
	}
	if err != nil {
		return c.recordFailure(endpoint, err)
	}
	c.log.Info("node activated", "node", endpoint, "name", peer.Name, "vpnIP", peer.VPNIP)
	return NodeResult{NodePublicEndpoint: endpoint, Peer: peer}
}

// recordFailure marks the node failed with the reason (unless it already
// is, with the same reason: an unreachable node retried writes nothing).
func (c *Core) recordFailure(endpoint string, err error) NodeResult {
	retrying := isRetryable(err)
	reason := err.Error()
	if retrying {
		reason += " (the coordinator retries)"
	}
	c.log.Warn("node activation failed", "node", endpoint, "retrying", retrying, "err", err)
	r := NodeResult{NodePublicEndpoint: endpoint, Err: err, Retrying: retrying}
	if p, ok := c.reg.PeerByEndpoint(endpoint); ok && p.State == records.StateFailed && p.LastError == reason {
		r.Peer = p
		return r
	}
	failed, ferr := c.reg.Fail(endpoint, reason)
	if ferr != nil {
		c.log.Error("recording node failure", "node", endpoint, "err", ferr)
	}
	r.Peer = failed
	return r
}

// tryActivateNode makes one attempt; contacted is set once the node has
// answered. Errors that may pass are retryable.
func (c *Core) tryActivateNode(ctx context.Context, endpoint string, contacted *bool) (records.Peer, error) {
	cl := c.mustCluster()
	st, err := c.cfg.Activator.GetNodeState(ctx, endpoint)
	if err != nil {
		return records.Peer{}, mayPass(fmt.Errorf("contacting node: %w", err))
	}
	*contacted = true
	crashNodeStateRead.Hit()
	switch {
	case st.State == StateNode && st.ClusterID == cl.ID:
		// A retry after a lost answer: the node activates idempotently.
	case st.State == StateActivating:
		return records.Peer{}, retryable{fmt.Errorf("node %s is being activated", st.Name)}
	case st.State != StateAcceptingInit:
		return records.Peer{}, fmt.Errorf("node %s is %s (cluster %q), not waiting for activation", st.Name, st.State, st.ClusterID)
	}
	if st.Name == "" {
		return records.Peer{}, errors.New("node reported an empty name")
	}
	// A node waiting for activation at an endpoint the registry knows as
	// active lost its state (reinstalled): it is activated again, with its
	// VPN IP and its new keys.
	// Keys held by another active peer or by a removed one are refused
	// here, before the node changes anything.
	reserved, err := c.reg.Reserve(endpoint, st.Name, st.VPNPubKey, st.SigningPubKey, st.State == StateAcceptingInit)
	if err != nil {
		return reserved, storeOrRefusal(err)
	}
	crashNodeReserved.Hit()
	if st.State == StateNode && st.VPNIP.IsValid() && st.VPNIP != reserved.VPNIP {
		return records.Peer{}, fmt.Errorf("node %s says it is node %s of this cluster, but the registry holds %s for it", st.Name, st.VPNIP, reserved.VPNIP)
	}
	self, selfVPNIP := c.cfg.Self, c.coordinatorVPNIP()
	activated, err := c.cfg.Activator.ActivateAsNode(ctx, endpoint, NodeActivation{
		ClusterID: cl.ID,
		VPNCIDR:   cl.VPNCIDR,
		NodeVPNIP: reserved.VPNIP,
		Coordinator: CoordinatorInfo{
			Name:           self.Name,
			VPNIP:          selfVPNIP,
			VPNPubKey:      self.VPNPrivKey.PublicKey(),
			WGEndpoint:     self.WGEndpoint().String(),
			VPNAPIEndpoint: hostPort(selfVPNIP, c.cfg.VPNAPIPort),
			TLSPin:         self.TLSPin,
			SigningPubKey:  self.SigningPubKey,
		},
		OtherCoordinators: c.otherCoordinators(selfVPNIP),
	})
	if err != nil {
		return records.Peer{}, mayPass(fmt.Errorf("activating node: %w", err))
	}
	crashNodeAnswered.Hit()
	switch {
	case activated.Name != st.Name:
		err = fmt.Errorf("node changed its name from %q to %q during activation", st.Name, activated.Name)
	case len(activated.WGPubKey) != 32 || len(activated.SigningPubKey) != ed25519.PublicKeySize:
		err = fmt.Errorf("node reported keys of %d and %d bytes, want 32 and %d", len(activated.WGPubKey), len(activated.SigningPubKey), ed25519.PublicKeySize)
	default:
		var peer records.Peer
		if peer, err = c.reg.Activate(reserved.VPNIP, activated); err == nil {
			crashNodeRecorded.Hit()
			return peer, nil
		}
		if !registryRefused(err) {
			// The store could not write: the node keeps its role and the
			// next attempt records it.
			return records.Peer{}, retryable{err}
		}
	}
	// The node activated itself but the registry refused it: it must not
	// keep a role nobody knows, so it is told to leave again.
	if lerr := c.cfg.Activator.Leave(ctx, endpoint, LeaveRequest{ClusterID: cl.ID, NodeVPNIP: reserved.VPNIP}); lerr != nil {
		c.log.Warn("telling a refused node to leave", "node", endpoint, "err", lerr)
	}
	return records.Peer{}, err
}

// Removal is what RemoveNode did.
type Removal struct {
	// Removed is the node's record as it was before the removal.
	Removed records.Peer
	// Told: the machine was reached and told to leave. Only an active
	// node is told; TellErr says why telling it failed.
	Told    bool
	TellErr error
}

// RemoveNode removes a node, whatever its state (a failed or pending row,
// such as a mistyped endpoint, included), named by its name, VPN IP or
// public endpoint: in one revision it leaves every peer's WireGuard
// configuration, every whitelist, endpoint list and catalog; its VPN IP is
// retired and its keys are refused from then on. If the machine is
// reachable it is told to leave (and returns to accepting-init with a new
// identity).
func (c *Core) RemoveNode(ctx context.Context, target string) (Removal, error) {
	if _, ok := c.Registry(); !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return Removal{}, c.wrongStateLocked()
	}
	p, err := c.findNode(target)
	if err != nil {
		return Removal{}, err
	}
	removed, err := c.reg.Remove(p.VPNIP)
	if err != nil {
		if errors.Is(err, records.ErrConflict) || errors.Is(err, records.ErrRemoved) {
			return Removal{}, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
		}
		return Removal{}, err
	}
	c.log.Info("node removed", "name", removed.Name, "vpnIP", removed.VPNIP, "endpoint", removed.PublicEndpoint, "was", removed.State)
	if removed.PublicEndpoint != "" {
		c.forgetIntent(removed.PublicEndpoint)
	}
	out := Removal{Removed: removed}
	if removed.State == records.StateActive && removed.PublicEndpoint != "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out.TellErr = c.cfg.Activator.Leave(ctx, removed.PublicEndpoint, LeaveRequest{ClusterID: c.mustCluster().ID, NodeVPNIP: removed.VPNIP})
		if out.TellErr != nil && c.leftAlready(ctx, removed, 5*time.Second) {
			// Its watch told it first (the removal committed before this
			// call): it is waiting for activation again.
			out.TellErr = nil
		}
		if out.TellErr != nil {
			c.log.Warn("telling the removed node to leave", "node", removed.PublicEndpoint, "err", out.TellErr)
		}
		out.Told = out.TellErr == nil
	}
	return out, nil
}

// leftAlready reports whether the removed node's machine answers, before
// within, that it no longer is that node: it left (or is leaving), or it
// is another cluster's. A machine that is restarting after leaving through
// its watch (the Leave call broke on it) is asked again until it answers.
func (c *Core) leftAlready(ctx context.Context, removed records.Peer, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		st, err := c.cfg.Activator.GetNodeState(ctx, removed.PublicEndpoint)
		if err == nil {
			return st.State != StateNode || st.ClusterID != c.mustCluster().ID || st.VPNIP != removed.VPNIP
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// findNode finds the record a removal names: a name (active or pending
// first, then failed), a VPN IP or a public endpoint.
func (c *Core) findNode(target string) (records.Peer, error) {
	if ip, err := netip.ParseAddr(target); err == nil {
		if p, ok := c.reg.Peer(ip); ok && p.State != records.StateRemoved {
			return p, nil
		}
		return records.Peer{}, fmt.Errorf("%w: no node has VPN IP %s", ErrNotFound, ip)
	}
	if ap, err := netip.ParseAddrPort(target); err == nil {
		if p, ok := c.reg.PeerByEndpoint(ap.String()); ok {
			return p, nil
		}
		return records.Peer{}, fmt.Errorf("%w: no node has public endpoint %s", ErrNotFound, ap)
	}
	if p, ok := c.reg.PeerByName(target); ok {
		return p, nil
	}
	_, peers := c.reg.Peers()
	var found []records.Peer
	for _, p := range peers {
		if p.Name == target {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return records.Peer{}, fmt.Errorf("%w: no node is named %q (give a name, a VPN IP or a public endpoint IP:PORT)", ErrNotFound, target)
	case 1:
		return found[0], nil
	}
	return records.Peer{}, fmt.Errorf("%w: %d rows are named %q; give the VPN IP or the public endpoint of the one to remove", ErrInvalidArgument, len(found), target)
}

// leaveAsCoordinator takes a coordinator that another coordinator removed
// out of the cluster: its interface goes down, its role is forgotten, and
// the daemon starts over with a new identity.
func (c *Core) leaveAsCoordinator(ctx context.Context) {
	c.mu.Lock()
	if c.state != StateCoordinator {
		c.mu.Unlock()
		return
	}
	c.state = StateActivating
	c.mu.Unlock()
	c.log.Warn("this coordinator was removed from its cluster; leaving it")
	c.networkDown(ctx)
	if err := c.cfg.Store.Update(func(tx store.Tx) error { return tx.Delete(keyRole) }); err != nil {
		c.fail(fmt.Errorf("forgetting the coordinator role after removal: %w", err))
		return
	}
	c.end(StateAcceptingInit, nil)
	if err := c.cfg.Services.Removed(context.WithoutCancel(ctx)); err != nil {
		c.fail(fmt.Errorf("leaving the cluster after removal: %w", err))
	}
}
