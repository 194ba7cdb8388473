package core

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
)

// fakeNet is the wire between the test peers: the coordinators' vpnapis by
// endpoint (registered by fakeServices) and the nodes' pubapis by endpoint
// (held by fakeActivator). It can break the nodes' connections on demand.
type fakeNet struct {
	mu       sync.Mutex
	vpnapis  map[string]*fakeVPNAPI
	dialErr  error
	watchErr error
	// holds cancels the watches in flight, so breaking the net ends them.
	holds map[*context.CancelFunc]struct{}
	// reported is the last revision each peer reported (the coordinator
	// through Config.Applied).
	reported map[netip.Addr]uint64
	// reports counts the reports each node made on its watches.
	reports map[netip.Addr]int
	// starts is how each peer's last watch started.
	starts  map[netip.Addr]WatchStart
	dials   int
	watches int
}

// fakeVPNAPI is a coordinator's vpnapi as nodes see it: its registry and
// its feed, for the lifetime of the coordinator's services.
type fakeVPNAPI struct {
	reg  *registry.Registry
	feed *feed.Feed
	ctx  context.Context
}

// errConnRefused is what an unreachable peer gives: no answer.
var errConnRefused = fmt.Errorf("connection refused: %w", ErrUnanswered)

// fakeKeepalive is the fake vpnapi's keepalive.
const fakeKeepalive = 200 * time.Millisecond

func newFakeNet() *fakeNet {
	return &fakeNet{vpnapis: map[string]*fakeVPNAPI{}, holds: map[*context.CancelFunc]struct{}{}, reported: map[netip.Addr]uint64{},
		reports: map[netip.Addr]int{}, starts: map[netip.Addr]WatchStart{}}
}

func (n *fakeNet) report(ip netip.Addr, rev uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reported[ip] = rev
}

func (n *fakeNet) reportCount(ip netip.Addr) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reports[ip]
}

func (n *fakeNet) lastStart(ip netip.Addr) WatchStart {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.starts[ip]
}

func (n *fakeNet) lastReport(ip netip.Addr) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reported[ip]
}

// serve publishes reg and its feed at endpoint until ctx ends.
func (n *fakeNet) serve(ctx context.Context, endpoint string, reg *registry.Registry, f *feed.Feed) {
	api := &fakeVPNAPI{reg: reg, feed: f, ctx: ctx}
	n.mu.Lock()
	n.vpnapis[endpoint] = api
	n.mu.Unlock()
	context.AfterFunc(ctx, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.vpnapis[endpoint] == api {
			delete(n.vpnapis, endpoint)
		}
	})
}

// breakConns makes dials fail with dialErr and watches (also those in
// flight) fail with watchErr; nil errors heal the net.
func (n *fakeNet) breakConns(dialErr, watchErr error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dialErr, n.watchErr = dialErr, watchErr
	if watchErr != nil {
		for cancel := range n.holds {
			(*cancel)()
		}
	}
}

// attempts is the number of dials and watch calls so far.
func (n *fakeNet) attempts() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dials + n.watches
}

// fakeDialer is one peer's way to its coordinator's vpnapi. Like the real
// vpnapi, the coordinator knows the caller by its signing key and accepts
// only active nodes, coordinators and admins (and removed nodes, which it
// tells so).
type fakeDialer struct {
	net           *fakeNet
	signingPubKey []byte
}

var _ CoordinatorDialer = (*fakeDialer)(nil)

// Watch implements CoordinatorDialer.
func (d *fakeDialer) Watch(ctx context.Context, co CoordinatorInfo, start WatchStart) (Watch, error) {
	n := d.net
	n.mu.Lock()
	n.dials++
	err := n.dialErr
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	api, hold, done, err := n.startWatch(ctx, co.VPNAPIEndpoint)
	if err != nil {
		return nil, err
	}
	caller, ok := api.reg.LookupSigningKey(d.signingPubKey)
	if !ok || (caller.Role != records.RoleNode && caller.Role != records.RoleCoordinator && caller.Role != records.RoleAdmin) {
		done()
		return nil, errors.New("permission denied: not an active node of this cluster")
	}
	n.mu.Lock()
	n.starts[caller.VPNIP] = start
	n.mu.Unlock()
	return &fakeWatch{net: n, api: api, hold: hold, done: done, ip: caller.VPNIP, sent: start.Applied}, nil
}

// fakeWatch serves a watch from the coordinator's feed the way
// vpnapi.Server does.
type fakeWatch struct {
	net  *fakeNet
	api  *fakeVPNAPI
	hold context.Context
	done func()
	ip   netip.Addr
	sent uint64
}

// Recv implements Watch.
func (w *fakeWatch) Recv() (update.Update, error) {
	for {
		u, err := w.api.feed.Next(w.hold, w.ip, w.sent, fakeKeepalive)
		switch {
		case w.net.currentWatchErr() != nil:
			return update.Update{}, w.net.currentWatchErr()
		case w.api.ctx.Err() != nil:
			return update.Update{}, errors.New("coordinator went away")
		case err != nil:
			return update.Update{}, err
		}
		if u.Kind == update.Unchanged && u.Revision != w.sent {
			w.sent = u.Revision // nothing for this node
			continue
		}
		w.sent = u.Revision
		return u, nil
	}
}

// Report implements Watch.
func (w *fakeWatch) Report(applied uint64, _ time.Duration) error {
	if err := w.net.currentWatchErr(); err != nil {
		return err
	}
	w.net.report(w.ip, applied)
	w.net.mu.Lock()
	w.net.reports[w.ip]++
	w.net.mu.Unlock()
	return nil
}

// Close implements Watch.
func (w *fakeWatch) Close() error {
	w.done()
	return nil
}

// startWatch finds the vpnapi at endpoint and returns a hold context that
// ends with ctx, with the coordinator, or when the net breaks.
func (n *fakeNet) startWatch(ctx context.Context, endpoint string) (*fakeVPNAPI, context.Context, func(), error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watches++
	if n.watchErr != nil {
		return nil, nil, nil, n.watchErr
	}
	api, ok := n.vpnapis[endpoint]
	if !ok {
		return nil, nil, nil, fmt.Errorf("vpnapi %s: %w", endpoint, errConnRefused)
	}
	hold, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(api.ctx, cancel)
	n.holds[&cancel] = struct{}{}
	return api, hold, func() {
		stop()
		cancel()
		n.mu.Lock()
		delete(n.holds, &cancel)
		n.mu.Unlock()
	}, nil
}

func (n *fakeNet) currentWatchErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.watchErr
}

// fakeServices records the role services started and serves a
// coordinator's registry on the fake net, like the daemon serves the vpnapi.
type fakeServices struct {
	net        *fakeNet
	vpnapiPort int
	reg        *registry.Registry

	mu      sync.Mutex
	calls   []string
	fail    error
	removed int
}

var _ RoleServices = (*fakeServices)(nil)

// StartCoordinator implements RoleServices.
func (s *fakeServices) StartCoordinator(ctx context.Context, self records.Peer) (Feed, error) {
	cl, ok := s.reg.Cluster()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	if !ok {
		return nil, errors.New("fake services: coordinator started with an empty registry")
	}
	f, err := feed.New(s.reg, rules.DefaultRules(), feed.Options{})
	if err != nil {
		return nil, err
	}
	s.calls = append(s.calls, "StartCoordinator "+cl.ID)
	s.net.serve(ctx, hostPort(self.VPNIP, s.vpnapiPort), s.reg, f)
	return f, nil
}

// StartNode implements RoleServices.
func (s *fakeServices) StartNode(_ context.Context, cfg NodeConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.calls = append(s.calls, "StartNode "+cfg.VPNIP.String())
	return nil
}

// Removed implements RoleServices.
func (s *fakeServices) Removed(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "Removed")
	return nil
}

func (s *fakeServices) failWith(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *fakeServices) started() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// behaviour is how a fake node answers the coordinator.
type behaviour int

const (
	// behaveOK forwards to the node's core.
	behaveOK behaviour = iota
	// behaveUnreachable fails every call.
	behaveUnreachable
	// behaveLoseAnswer activates the node but loses the first answer.
	behaveLoseAnswer
	// behaveSlow does not answer ActivateAsNode before ctx ends.
	behaveSlow
	// behaveFailed says the node has failed.
	behaveFailed
	// behaveDelayed answers ActivateAsNode after fakeDelay.
	behaveDelayed
)

const fakeDelay = 200 * time.Millisecond

// activatorCall is one call the coordinator made.
type activatorCall struct {
	Method   string
	Endpoint string
	Req      NodeActivation // ActivateAsNode only
}

// fakeActivator reaches the nodes' cores by public endpoint, with a
// behaviour per node. It can also hold every ActivateAsNode call until a
// number of them are in flight at once (barrier), and records the calls.
type fakeActivator struct {
	mu        sync.Mutex
	nodes     map[string]*Core
	behaviour map[string]behaviour
	calls     []activatorCall
	lost      map[string]bool // answers already lost

	// signingKey is the coordinator's, signing requests to leave.
	signingKey ed25519.PrivateKey

	barrier     int           // 0: none
	open        chan struct{} // closed once barrier calls were in flight
	barrierWait time.Duration
	inFlight    int
	maxInFlight int
}

var _ NodeActivator = (*fakeActivator)(nil)

func newFakeActivator() *fakeActivator {
	return &fakeActivator{nodes: map[string]*Core{}, behaviour: map[string]behaviour{}, lost: map[string]bool{}}
}

func (a *fakeActivator) setNode(endpoint string, c *Core) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nodes[endpoint] = c
}

func (a *fakeActivator) setBehaviour(endpoint string, b behaviour) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.behaviour[endpoint] = b
}

// setBarrier makes ActivateAsNode wait until n calls are in flight at once
// (or fail after wait).
func (a *fakeActivator) setBarrier(n int, wait time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.barrier, a.barrierWait, a.open = n, wait, make(chan struct{})
}

func (a *fakeActivator) lookup(method, endpoint string, req NodeActivation) (*Core, behaviour, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, activatorCall{Method: method, Endpoint: endpoint, Req: req})
	node, ok := a.nodes[endpoint]
	b := a.behaviour[endpoint]
	if !ok || b == behaveUnreachable {
		return nil, b, errConnRefused
	}
	return node, b, nil
}

func (a *fakeActivator) recorded() []activatorCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]activatorCall(nil), a.calls...)
}

// GetNodeState implements NodeActivator.
func (a *fakeActivator) GetNodeState(_ context.Context, endpoint string) (NodeState, error) {
	node, b, err := a.lookup("GetNodeState", endpoint, NodeActivation{})
	if err != nil {
		return NodeState{}, err
	}
	st := node.Status()
	if b == behaveFailed {
		st.State, st.Failure = StateFailed, "disk full"
	}
	return NodeState{State: st.State, ClusterID: st.ClusterID, VPNIP: st.VPNIP, Name: st.Name, Horde: st.Horde, VPNPubKey: st.VPNPubKey[:], SigningPubKey: st.SigningPubKey, StoreID: st.StoreID}, nil
}

// JoinAsCoordinator implements CoordinatorJoiner.
func (a *fakeActivator) JoinAsCoordinator(ctx context.Context, endpoint string, req JoinRequest) (records.Activated, error) {
	node, _, err := a.lookup("JoinAsCoordinator", endpoint, NodeActivation{})
	if err != nil {
		return records.Activated{}, err
	}
	return node.JoinAsCoordinator(ctx, req)
}

var _ CoordinatorJoiner = (*fakeActivator)(nil)

// Leave implements NodeActivator: the node checks the coordinator's
// signature itself, so the fake signs with the key the harness gave it.
func (a *fakeActivator) Leave(ctx context.Context, endpoint string, req LeaveRequest) error {
	node, _, err := a.lookup("Leave", endpoint, NodeActivation{})
	if err != nil {
		return err
	}
	a.mu.Lock()
	key := a.signingKey
	a.mu.Unlock()
	return node.LeaveCluster(ctx, req, ed25519.Sign(key, LeaveMessage(req)))
}

// ActivateAsNode implements NodeActivator.
func (a *fakeActivator) ActivateAsNode(ctx context.Context, endpoint string, req NodeActivation) (records.Activated, error) {
	node, b, err := a.lookup("ActivateAsNode", endpoint, req)
	if err != nil {
		return records.Activated{}, err
	}
	release, err := a.enter(ctx)
	defer release()
	if err != nil {
		return records.Activated{}, err
	}
	switch b {
	case behaveDelayed:
		time.Sleep(fakeDelay)
	case behaveSlow:
		<-ctx.Done()
		return records.Activated{}, ctx.Err()
	case behaveLoseAnswer:
		act, err := node.ActivateAsNode(ctx, req)
		if err == nil && a.loseOnce(endpoint) {
			return records.Activated{}, fmt.Errorf("connection reset by peer: %w", ErrUnanswered)
		}
		return act, err
	}
	return node.ActivateAsNode(ctx, req)
}

func (a *fakeActivator) loseOnce(endpoint string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lost[endpoint] {
		return false
	}
	a.lost[endpoint] = true
	return true
}

// enter counts a call in flight and waits at the barrier.
func (a *fakeActivator) enter(ctx context.Context) (release func(), err error) {
	a.mu.Lock()
	a.inFlight++
	a.maxInFlight = max(a.maxInFlight, a.inFlight)
	open, n, wait := a.open, a.barrier, a.barrierWait
	if n > 0 && a.inFlight >= n {
		select {
		case <-open:
		default:
			close(open)
		}
	}
	a.mu.Unlock()
	release = func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.inFlight--
	}
	if n == 0 {
		return release, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-open:
		return release, nil
	case <-ctx.Done():
		return release, ctx.Err()
	case <-t.C:
		return release, fmt.Errorf("barrier: %d calls were never in flight at once", n)
	}
}

func (a *fakeActivator) maxConcurrent() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.maxInFlight
}

// failingStore is a store whose Updates fail on demand.
type failingStore struct {
	store.Store
	mu   sync.Mutex
	fail error
}

func (s *failingStore) failUpdates(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// Update implements store.Store: a failing Update runs fn and then
// fails, so its writes are discarded.
func (s *failingStore) Update(fn func(store.Tx) error) error {
	s.mu.Lock()
	failure := s.fail
	s.mu.Unlock()
	if failure == nil {
		return s.Store.Update(fn)
	}
	return s.Store.Update(func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return failure
	})
}
