package steward_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/view"

	"github.com/google/go-cmp/cmp"

	"github.com/fabricmesh/fabric/coordinator/steward"
)

var update = flag.Bool("update", false, "rewrite testdata/views/*.golden from the computed views")

// TestViewGolden computes the view of every node of each testdata/views/*.in
// case and compares it with the .golden file next to it.
func TestViewGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/views/*.in")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases in testdata/views (err %v)", err)
	}
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".in")
		t.Run(name, func(t *testing.T) {
			c := readCase(t, in)
			got := c.render(t)
			golden := strings.TrimSuffix(in, ".in") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("views (-want +got), run with -update if the change is intended:\n%s", diff)
			}
		})
	}
}

// render computes and formats every node's view, checking on the way the
// invariants every view must hold.
func (c viewCase) render(tb testing.TB) string {
	tb.Helper()
	known, unknown := c.viewNodes()
	all := steward.Views(c.rules, c.nodes, c.endpoints, c.clients)
	var b strings.Builder
	for _, name := range known {
		v := steward.View(c.rules, c.nodes, c.endpoints, c.clients, name)
		c.check(tb, name, v, all[name])
		fmt.Fprintf(&b, "node %s\n", name)
		formatView(&b, v)
	}
	for _, name := range unknown {
		v := steward.View(c.rules, c.nodes, c.endpoints, c.clients, name)
		if diff := cmp.Diff(view.View{}, v); diff != "" {
			tb.Errorf("view of unknown node %s (-want +got):\n%s", name, diff)
		}
		if _, ok := all[name]; ok {
			tb.Errorf("Views holds unknown node %s", name)
		}
		fmt.Fprintf(&b, "unknown node %s\n", name)
		formatView(&b, v)
	}
	return b.String()
}

// check asserts that View agrees with Views, that a shuffled input gives
// the same view, and that the view rebuilds from an empty one by Diff and
// Apply.
func (c viewCase) check(tb testing.TB, name string, v, fromViews view.View) {
	tb.Helper()
	if diff := cmp.Diff(v, fromViews); diff != "" {
		tb.Errorf("node %s: Views differs from View (-View +Views):\n%s", name, diff)
	}
	if !c.hasDuplicates() {
		s := c.shuffled(rand.New(rand.NewPCG(uint64(len(name)), 1)))
		if diff := cmp.Diff(v, steward.View(s.rules, s.nodes, s.endpoints, s.clients, name)); diff != "" {
			tb.Errorf("node %s: view depends on input order (-in order +shuffled):\n%s", name, diff)
		}
	}
	up, removed := view.Diff(view.View{}, v)
	if diff := cmp.Diff(v, view.View{}.Apply(up, removed)); diff != "" {
		tb.Errorf("node %s: Apply(Diff(empty, view)) (-want +got):\n%s", name, diff)
	}
	for _, e := range v.Endpoints {
		if svc, _, err := serviceid.Parse(e.Endpoint); err != nil || svc != e.Service {
			tb.Errorf("node %s: endpoint entry %+v: service does not match endpoint ID", name, e)
		}
	}
}

func (c viewCase) hasDuplicates() bool {
	seen := make(map[string]bool)
	for _, n := range c.nodes {
		seen["node "+n.Name] = true
	}
	for _, e := range c.endpoints {
		seen["endpoint "+e.ID()] = true
	}
	for _, cl := range c.clients {
		seen["client "+cl.ID()] = true
	}
	return len(seen) != len(c.nodes)+len(c.endpoints)+len(c.clients)
}

func (c viewCase) shuffled(r *rand.Rand) viewCase {
	s := viewCase{
		rules:     c.rules,
		nodes:     append([]steward.Node(nil), c.nodes...),
		endpoints: append([]steward.Endpoint(nil), c.endpoints...),
		clients:   append([]steward.Client(nil), c.clients...),
	}
	r.Shuffle(len(s.nodes), func(i, j int) { s.nodes[i], s.nodes[j] = s.nodes[j], s.nodes[i] })
	r.Shuffle(len(s.endpoints), func(i, j int) { s.endpoints[i], s.endpoints[j] = s.endpoints[j], s.endpoints[i] })
	r.Shuffle(len(s.clients), func(i, j int) { s.clients[i], s.clients[j] = s.clients[j], s.clients[i] })
	return s
}

func TestViewDoesNotShareKeys(t *testing.T) {
	nodes := []steward.Node{{Name: "a", Horde: "h"}, {Name: "b", Horde: "h"}}
	clients := []steward.Client{{Service: "pastiche", Node: "a", PubKey: []byte("key-a")}}
	endpoints := []steward.Endpoint{{Service: "pastiche", Node: "b", Port: 1}}
	v := steward.View(rules.DefaultRules(), nodes, endpoints, clients, "b")
	if len(v.Whitelist) != 1 {
		t.Fatalf("whitelist %+v, want one entry", v.Whitelist)
	}
	v.Whitelist[0].PubKey[0] = 'X'
	if string(clients[0].PubKey) != "key-a" {
		t.Errorf("changing the view changed the client record's key to %q", clients[0].PubKey)
	}
}

func TestEndpointsUpIsTheOtherPastichesOfTheHorde(t *testing.T) {
	c := readCase(t, "testdata/views/ripstop.in")
	hordes := make(map[string]string)
	for _, n := range c.nodes {
		hordes[n.Name] = n.Horde
	}
	for _, n := range c.nodes {
		v := steward.View(c.rules, c.nodes, c.endpoints, c.clients, n.Name)
		var got, want []string
		for _, e := range v.Endpoints {
			if e.Client == serviceid.ID("pastiche", n.Name) {
				got = append(got, e.Endpoint)
			}
		}
		for _, m := range c.nodes {
			if m.Name != n.Name && m.Horde == n.Horde {
				want = append(want, serviceid.ID("pastiche", m.Name))
			}
		}
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("node %s: pastiche endpoints (-want +got):\n%s", n.Name, diff)
		}
	}
}
