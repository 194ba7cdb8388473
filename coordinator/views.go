package coordinator

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/view"
)

// Views computes each node's service view from the registry's records and
// the cluster's rules: the records nodes registered, plus the built-in
// services every registered peer has (its reeve's endpoint and client) and
// the coordinator's (the steward endpoint, the registry client).
//
// All views are computed together, at most once per MinInterval: while
// nodes join and register, the revision moves many times a second, and
// computing every node's view at each revision would cost O(nodes²) per
// change. Callers that need a newer view than the last computed wait for
// the next computation, which serves them all.
type Views struct {
	reg   *registry.Registry
	rules rules.Rules
	// MinInterval between two computations (default 50ms).
	MinInterval time.Duration

	mu         sync.Mutex
	computed   *computed
	computedAt time.Time
	running    chan struct{} // closed when the computation under way ends
}

// computed is every view as of one revision.
type computed struct {
	rev       uint64
	views     map[string]view.View
	byIP      map[netip.Addr]string
	endpoints []steward.Endpoint
	clients   []steward.Client
}

// NewViews returns the views of reg's cluster under rules.
func NewViews(reg *registry.Registry, rules rules.Rules) *Views {
	return &Views{reg: reg, rules: rules, MinInterval: 50 * time.Millisecond}
}

// For returns the view of the peer at ip as of the returned revision, which
// is at least the registry's revision when For was called; false if ip is
// not an active peer.
func (v *Views) For(ctx context.Context, ip netip.Addr) (view.View, uint64, bool, error) {
	c, err := v.current(ctx)
	if err != nil {
		return view.View{}, 0, false, err
	}
	name, ok := c.byIP[ip]
	return c.views[name], c.rev, ok, nil
}

// current returns views as of at least the registry's current revision.
func (v *Views) current(ctx context.Context) (*computed, error) {
	want := v.reg.Revision()
	for {
		v.mu.Lock()
		if c := v.computed; c != nil && c.rev >= want {
			v.mu.Unlock()
			return c, nil
		}
		if ch := v.running; ch != nil {
			v.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		wait := v.MinInterval - time.Since(v.computedAt)
		ch := make(chan struct{})
		v.running = ch
		v.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
		c := v.compute()
		v.mu.Lock()
		v.computed, v.computedAt, v.running = c, time.Now(), nil
		v.mu.Unlock()
		close(ch)
		return c, nil
	}
}

// compute turns a snapshot of the registry into every node's view.
func (v *Views) compute() *computed {
	rev, peers, services := v.reg.Snapshot()
	c := &computed{rev: rev, byIP: map[netip.Addr]string{}}
	var nodes []steward.Node
	for _, p := range peers {
		if p.State != records.StateActive || p.Role == records.RoleAdmin {
			continue
		}
		c.byIP[p.VPNIP] = p.Name
		nodes = append(nodes, steward.Node{Name: p.Name, Horde: p.Horde, VPNIP: p.VPNIP})
		if p.Role == records.RoleCoordinator {
			c.endpoints = append(c.endpoints, steward.Endpoint{Service: serviceid.Steward, Node: p.Name, Port: serviceid.StewardPort})
			c.clients = append(c.clients, steward.Client{Service: serviceid.Registry, Node: p.Name, PubKey: p.SigningPubKey})
		}
		if !p.Registered {
			continue
		}
		c.endpoints = append(c.endpoints, steward.Endpoint{Service: serviceid.Reeve, Node: p.Name, Port: serviceid.ReevePort})
		c.clients = append(c.clients, steward.Client{Service: serviceid.Reeve, Node: p.Name, PubKey: p.ReevePubKey})
		for _, e := range services[p.VPNIP].Endpoints {
			c.endpoints = append(c.endpoints, steward.Endpoint{Service: e.Service, Node: p.Name, Port: e.Port})
		}
		for _, cl := range services[p.VPNIP].Clients {
			c.clients = append(c.clients, steward.Client{Service: cl.Service, Node: p.Name, PubKey: cl.PubKey})
		}
	}
	c.views = steward.Views(v.rules, nodes, c.endpoints, c.clients)
	return c
}

// Records returns the rules in force and the service records the views are
// computed from, built-in ones included.
func (v *Views) Records() (rules []string, endpoints []steward.Endpoint, clients []steward.Client) {
	c := v.compute()
	for _, r := range v.rules.List() {
		rules = append(rules, r.String())
	}
	return rules, c.endpoints, c.clients
}
