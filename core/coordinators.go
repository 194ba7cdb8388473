package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// ErrNeedsSharedStore refuses a second coordinator on a cluster whose
// records live in one coordinator's own store.
var ErrNeedsSharedStore = errors.New("the cluster's store is this coordinator's own bbolt file")

// JoinRequest asks a peer to become another coordinator of a cluster whose
// store it shares: its record is reserved at VPNIP.
type JoinRequest struct {
	ClusterID string
	VPNIP     netip.Addr
}

// CoordinatorJoiner reaches a peer that is to become a coordinator (the
// pubapi, with the bootstrap key).
type CoordinatorJoiner interface {
	JoinAsCoordinator(ctx context.Context, publicEndpoint string, req JoinRequest) (records.Activated, error)
}

// joinWait bounds how long a joining coordinator waits for its record to
// become active.
const joinWait = 30 * time.Second

// AddCoordinator makes the peer at publicEndpoint another coordinator of
// this cluster. The peer must run with the same shared store (etcd): its
// record is reserved (a VPN IP), it brings up its interface and starts
// serving the vpnapi and the steward once its record is active, and every
// node learns it with the next update (and may fail over to it).
func (c *Core) AddCoordinator(ctx context.Context, publicEndpoint string) (records.Peer, error) {
	if _, ok := c.Registry(); !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return records.Peer{}, c.wrongStateLocked()
	}
	if !c.cfg.SharedRegistry {
		return records.Peer{}, fmt.Errorf("%w: several coordinators need the cluster's records in etcd: stop this coordinator, copy its state with `fabricd migrate-store --from bolt:<state-dir>/fabric.db --to etcd://HOST:PORT`, and start every coordinator with --store etcd://HOST:PORT", ErrNeedsSharedStore)
	}
	joiner, ok := c.cfg.Activator.(CoordinatorJoiner)
	if !ok {
		return records.Peer{}, errors.New("core: the activator cannot make coordinators")
	}
	ap, err := netip.ParseAddrPort(publicEndpoint)
	if err != nil || ap.Port() == 0 {
		return records.Peer{}, fmt.Errorf("%w: coordinator endpoint %q: want IP:PORT", ErrInvalidArgument, publicEndpoint)
	}
	endpoint := ap.String()
	if cos, _ := c.ClusterCoordinators(); len(cos) >= MaxCoordinators {
		if _, known := c.reg.PeerByEndpoint(endpoint); !known {
			return records.Peer{}, fmt.Errorf("%w: the cluster has %d coordinators, the most it may have", ErrInvalidArgument, len(cos))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.NodeActivationTimeout+joinWait)
	defer cancel()
	st, err := c.cfg.Activator.GetNodeState(ctx, endpoint)
	switch {
	case err != nil:
		return records.Peer{}, fmt.Errorf("contacting %s: %w", endpoint, err)
	case st.State != StateAcceptingInit:
		return records.Peer{}, fmt.Errorf("%w: %s is %s (cluster %q), not waiting for activation", ErrWrongState, endpoint, st.State, st.ClusterID)
	case st.StoreID != c.cfg.StoreID:
		return records.Peer{}, fmt.Errorf("%w: %s does not share this cluster's store (its store is %q, this one's %q): start its fabricd with the same --store", ErrInvalidArgument, endpoint, st.StoreID, c.cfg.StoreID)
	}
	reserved, err := c.reg.ReserveCoordinator(endpoint, st.Name, st.VPNPubKey, st.SigningPubKey)
	if err != nil {
		return records.Peer{}, err
	}
	cl := c.mustCluster()
	act, err := joiner.JoinAsCoordinator(ctx, endpoint, JoinRequest{ClusterID: cl.ID, VPNIP: reserved.VPNIP})
	if err == nil && act.Name != st.Name {
		err = fmt.Errorf("%s changed its name from %q to %q while joining", endpoint, st.Name, act.Name)
	}
	if err != nil {
		if _, ferr := c.reg.Fail(endpoint, err.Error()); ferr != nil {
			c.log.Error("recording a failed coordinator", "coordinator", endpoint, "err", ferr)
		}
		return records.Peer{}, fmt.Errorf("making %s a coordinator: %w", endpoint, err)
	}
	peer, err := c.reg.Activate(reserved.VPNIP, act)
	if err != nil {
		if _, ferr := c.reg.Fail(endpoint, err.Error()); ferr != nil {
			c.log.Error("recording a failed coordinator", "coordinator", endpoint, "err", ferr)
		}
		return records.Peer{}, err
	}
	c.log.Info("coordinator added", "name", peer.Name, "vpnIP", peer.VPNIP, "endpoint", endpoint)
	return peer, nil
}

// JoinAsCoordinator makes this accepting-init peer another coordinator of
// the cluster its shared registry holds, at the VPN IP reserved for it:
// it brings up its interface, persists the role, answers with its keys,
// and starts the coordinator's services once its record is active (or
// goes back to accepting-init if it does not become active).
func (c *Core) JoinAsCoordinator(ctx context.Context, req JoinRequest) (records.Activated, error) {
	if !c.cfg.SharedRegistry {
		return records.Activated{}, fmt.Errorf("%w: this peer's store is its own bbolt file; start fabricd with the cluster's --store etcd://... to join it as a coordinator", ErrNeedsSharedStore)
	}
	if err := c.begin(); err != nil {
		return records.Activated{}, err
	}
	me, cl, err := c.joinRecord(req)
	if err != nil {
		c.end(StateAcceptingInit, nil)
		return records.Activated{}, err
	}
	self := c.cfg.Self
	if err := c.cfg.Network.Up(ctx, self.VPNPrivKey, self.WGPort, vpnPrefix(me.VPNIP, cl.VPNCIDR)); err != nil {
		c.networkDown(ctx)
		c.end(StateAcceptingInit, nil)
		return records.Activated{}, fmt.Errorf("bringing up the vpn interface: %w", err)
	}
	if err := c.cfg.Store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, keyRole, persistedRole{Role: StateCoordinator})
	}); err != nil {
		c.networkDown(ctx)
		c.end(StateAcceptingInit, nil)
		return records.Activated{}, fmt.Errorf("persisting the coordinator role: %w", err)
	}
	c.log.Info("joining as coordinator", "cluster", cl.ID, "vpnIP", me.VPNIP)
	c.goLoop(func(ctx context.Context) { c.finishJoin(ctx, me.VPNIP) })
	act := c.activated()
	act.TLSPin = self.TLSPin
	return act, nil
}

// joinRecord finds the reservation a join names: the cluster in the shared
// registry, and a pending coordinator record with this peer's keys.
func (c *Core) joinRecord(req JoinRequest) (records.Peer, records.Cluster, error) {
	if cu, ok := c.reg.(interface{ CatchUp() error }); ok {
		if err := cu.CatchUp(); err != nil {
			return records.Peer{}, records.Cluster{}, err
		}
	}
	cl, ok := c.reg.Cluster()
	if !ok || cl.ID != req.ClusterID {
		return records.Peer{}, records.Cluster{}, fmt.Errorf("%w: this peer's store does not hold cluster %s; start its fabricd with that cluster's --store", ErrInvalidArgument, req.ClusterID)
	}
	me, ok := c.reg.Peer(req.VPNIP)
	if !ok || me.Role != records.RoleCoordinator || me.State != records.StatePending ||
		!bytes.Equal(me.WGPubKey, pubKeyBytes(c.cfg.Self.VPNPrivKey)) {
		return records.Peer{}, records.Cluster{}, fmt.Errorf("%w: no coordinator is reserved at %s with this peer's keys", ErrInvalidArgument, req.VPNIP)
	}
	return me, cl, nil
}

// finishJoin waits for the record of this joining coordinator to become
// active, then starts the coordinator's services; a record that fails, is
// removed, or stays pending for joinWait takes the peer back to
// accepting-init.
func (c *Core) finishJoin(ctx context.Context, ip netip.Addr) {
	deadline := time.Now().Add(joinWait)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if cu, ok := c.reg.(interface{ CatchUp() error }); ok {
			_ = cu.CatchUp()
		}
		p, _ := c.reg.Peer(ip)
		switch p.State {
		case records.StateActive:
			c.end(StateCoordinator, nil)
			if err := c.startCoordinator(); err != nil {
				c.fail(err)
			}
			return
		case records.StatePending:
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		break
	}
	if ctx.Err() != nil {
		return
	}
	c.log.Warn("the coordinator's record did not become active; back to accepting-init", "vpnIP", ip)
	c.networkDown(ctx)
	if err := c.cfg.Store.Update(func(tx store.Tx) error { return tx.Delete(keyRole) }); err != nil {
		c.fail(fmt.Errorf("forgetting the coordinator role: %w", err))
		return
	}
	c.end(StateAcceptingInit, nil)
}

// Coordinators of this cluster, as the registry records them (a
// coordinator's view; nodes use Coordinators).
func (c *Core) ClusterCoordinators() ([]records.Peer, error) {
	if _, ok := c.Registry(); !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, c.wrongStateLocked()
	}
	_, peers := c.reg.Peers()
	var out []records.Peer
	for _, p := range peers {
		if p.Role == records.RoleCoordinator {
			out = append(out, p)
		}
	}
	return out, nil
}

// otherCoordinators are the cluster's active coordinators but self, for a
// node being activated (NodeActivation.OtherCoordinators).
func (c *Core) otherCoordinators(self netip.Addr) []CoordinatorInfo {
	var out []CoordinatorInfo
	for _, p := range c.reg.Coordinators() {
		if co, ok := c.coordinatorInfo(p); ok && p.VPNIP != self && len(out) < MaxCoordinators-1 {
			out = append(out, co)
		}
	}
	return out
}
