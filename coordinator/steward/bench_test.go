package steward_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/view"
)

// bigCluster returns n nodes spread over the given number of hordes, each
// running reeve and pastiche (endpoint and client); node n0 is the
// coordinator and also runs the steward, registry and fabric-admin.
func bigCluster(n, hordes int) viewCase {
	var c viewCase
	c.endpoints = []steward.Endpoint{{Service: "steward", Node: "n0", Port: 7300}}
	c.clients = []steward.Client{
		{Service: "registry", Node: "n0", PubKey: []byte("pk-registry")},
		{Service: "fabric-admin", Node: "n0", PubKey: []byte("pk-fabric-admin")},
	}
	base := netip.MustParseAddr("203.0.113.0").As4()
	for i := range n {
		name := fmt.Sprintf("n%d", i)
		ip := base
		ip[2], ip[3] = byte(i>>8), byte(i)
		c.nodes = append(c.nodes, steward.Node{Name: name, Horde: fmt.Sprintf("h%d", i%hordes), VPNIP: netip.AddrFrom4(ip)})
		for _, svc := range []string{"reeve", "pastiche"} {
			c.endpoints = append(c.endpoints, steward.Endpoint{Service: svc, Node: name, Port: 7100})
			c.clients = append(c.clients, steward.Client{Service: svc, Node: name, PubKey: []byte("pk-" + svc + "-" + name)})
		}
	}
	return c
}

// BenchmarkView computes one node's view of a 200-node cluster in 2 hordes.
func BenchmarkView(b *testing.B) {
	c := bigCluster(200, 2)
	rs := rules.DefaultRules()
	for _, node := range []string{"n0", "n7"} {
		b.Run(node, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				steward.View(rs, c.nodes, c.endpoints, c.clients, node)
			}
		})
	}
}

// BenchmarkViews computes every node's view of a 200-node cluster in 2
// hordes, at once and one node at a time.
func BenchmarkViews(b *testing.B) {
	c := bigCluster(200, 2)
	rs := rules.DefaultRules()
	b.Run("Views", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			steward.Views(rs, c.nodes, c.endpoints, c.clients)
		}
	})
	b.Run("View-each", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, n := range c.nodes {
				steward.View(rs, c.nodes, c.endpoints, c.clients, n.Name)
			}
		}
	})
}

// BenchmarkDiff diffs the coordinator's view before and after a node joins.
func BenchmarkDiff(b *testing.B) {
	rs := rules.DefaultRules()
	before, after := bigCluster(199, 2), bigCluster(200, 2)
	old := steward.View(rs, before.nodes, before.endpoints, before.clients, "n0")
	new := steward.View(rs, after.nodes, after.endpoints, after.clients, "n0")
	b.ReportAllocs()
	for b.Loop() {
		up, removed := view.Diff(old, new)
		old.Apply(up, removed)
	}
}
