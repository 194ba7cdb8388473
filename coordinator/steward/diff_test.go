package steward_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/view"
)

// randomView returns a sorted view with unique keys drawn from small pools,
// so that two random views share many keys, some with different values.
func randomView(r *rand.Rand) view.View {
	id := func() string { return fmt.Sprintf("s%d@n%d", r.IntN(3), r.IntN(3)) }
	var v view.View
	seen := make(map[string]bool)
	for range r.IntN(12) {
		e := view.WhitelistEntry{Endpoint: id(), Client: id(), PubKey: []byte(fmt.Sprintf("k%d", r.IntN(3)))}
		if !seen[e.Key()] {
			seen[e.Key()] = true
			v.Whitelist = append(v.Whitelist, e)
		}
	}
	for range r.IntN(12) {
		ep := id()
		e := view.EndpointEntry{Client: id(), Service: ep[:2], Endpoint: ep, Address: fmt.Sprintf("203.0.113.%d:%d", r.IntN(3), 7000+r.IntN(2))}
		if !seen[e.Key()] {
			seen[e.Key()] = true
			v.Endpoints = append(v.Endpoints, e)
		}
	}
	for range r.IntN(6) {
		e := view.CatalogEntry{Client: id(), Service: fmt.Sprintf("s%d", r.IntN(3))}
		if !seen[e.Key()] {
			seen[e.Key()] = true
			v.Catalog = append(v.Catalog, e)
		}
	}
	v.Sort()
	return v
}

func keys(v view.View) []string {
	var k []string
	for _, e := range v.Whitelist {
		k = append(k, e.Key())
	}
	for _, e := range v.Endpoints {
		k = append(k, e.Key())
	}
	for _, e := range v.Catalog {
		k = append(k, e.Key())
	}
	return k
}

func TestDiffApply(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		old, new := randomView(r), randomView(r)
		up, removed := view.Diff(old, new)
		if diff := cmp.Diff(new, old.Apply(up, removed)); diff != "" {
			t.Fatalf("case %d: Apply(old, Diff(old, new)) (-new +got):\nold %+v\n%s", i, old, diff)
		}
		checkDiffMinimal(t, i, old, new, up, removed)
		if up, removed := view.Diff(new, new); len(keys(up)) != 0 || removed != nil {
			t.Fatalf("case %d: Diff(v, v) = %+v, %q; want nothing", i, up, removed)
		}
	}
}

// checkDiffMinimal checks that upserts are new's entries whose key is new or
// whose value changed, and removed holds exactly the keys new lost, sorted.
func checkDiffMinimal(tb testing.TB, i int, old, new, up view.View, removed []string) {
	tb.Helper()
	oldKeys, newKeys := keys(old), keys(new)
	for _, k := range removed {
		if !slices.Contains(oldKeys, k) || slices.Contains(newKeys, k) {
			tb.Fatalf("case %d: removed %q is not a key old has and new lacks", i, k)
		}
	}
	if !slices.IsSorted(removed) {
		tb.Fatalf("case %d: removed %q not sorted", i, removed)
	}
	for _, k := range keys(up) {
		if !slices.Contains(newKeys, k) {
			tb.Fatalf("case %d: upsert %q is not in new", i, k)
		}
	}
	unchanged := len(keys(new)) - len(keys(up))
	for _, e := range new.Whitelist {
		if j := slices.IndexFunc(old.Whitelist, func(o view.WhitelistEntry) bool { return o.Key() == e.Key() }); j >= 0 && cmp.Equal(old.Whitelist[j], e) {
			unchanged--
		}
	}
	for _, e := range new.Endpoints {
		if slices.Contains(old.Endpoints, e) {
			unchanged--
		}
	}
	for _, e := range new.Catalog {
		if slices.Contains(old.Catalog, e) {
			unchanged--
		}
	}
	if unchanged != 0 {
		tb.Fatalf("case %d: upserts %+v are not exactly the changed entries of new", i, up)
	}
}

// TestDiffApplyComputedViews diffs the views of a ripstop-like cluster
// before and after random record changes.
func TestDiffApplyComputedViews(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	rs := rules.DefaultRules()
	c := bigCluster(12, 3)
	for i := range 200 {
		next := mutate(r, c)
		for _, n := range c.nodes {
			old := steward.View(rs, c.nodes, c.endpoints, c.clients, n.Name)
			new := steward.View(rs, next.nodes, next.endpoints, next.clients, n.Name)
			up, removed := view.Diff(old, new)
			if diff := cmp.Diff(new, old.Apply(up, removed)); diff != "" {
				t.Fatalf("step %d node %s: Apply(old, Diff(old, new)) (-new +got):\n%s", i, n.Name, diff)
			}
		}
		c = next
	}
}

// mutate returns c with one random change: a node moved to another horde
// or IP, a client's key rotated, an endpoint's port changed, or a record
// dropped or restored.
func mutate(r *rand.Rand, c viewCase) viewCase {
	next := viewCase{
		nodes:     slices.Clone(c.nodes),
		endpoints: slices.Clone(c.endpoints),
		clients:   slices.Clone(c.clients),
	}
	switch r.IntN(5) {
	case 0:
		i := r.IntN(len(next.nodes))
		next.nodes[i].Horde = fmt.Sprintf("h%d", r.IntN(3))
	case 1:
		i := r.IntN(len(next.clients))
		next.clients[i].PubKey = []byte(fmt.Sprintf("key-%d", r.Int()))
	case 2:
		i := r.IntN(len(next.endpoints))
		next.endpoints[i].Port = uint16(7000 + r.IntN(100))
	case 3:
		i := r.IntN(len(next.clients))
		next.clients = slices.Delete(next.clients, i, i+1)
		next.clients = append(next.clients, steward.Client{Service: "pastiche", Node: next.nodes[r.IntN(len(next.nodes))].Name, PubKey: []byte("k")})
	case 4:
		i := r.IntN(len(next.endpoints))
		next.endpoints = slices.Delete(next.endpoints, i, i+1)
		next.endpoints = append(next.endpoints, steward.Endpoint{Service: "pastiche", Node: next.nodes[r.IntN(len(next.nodes))].Name, Port: 7200})
	}
	return next
}
