package scale

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/vpnapi"
)

// cluster is a registry, its feed and simulated nodes that apply the
// feed's answers as the simulator does, through the vpnapi encoding.
type cluster struct {
	t     *testing.T
	reg   *registry.Registry
	feed  *feed.Feed
	names *names
	nodes []*node
	keys  int
}

func newCluster(t *testing.T) *cluster {
	reg, err := registry.Open(store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, reg: reg, names: newNames()}
	_, err = reg.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("198.18.0.0/16")},
		records.Peer{Name: "coord", Horde: "sharks", PublicEndpoint: "192.0.2.1:7443", WGEndpoint: "192.0.2.1:51820",
			WGPubKey: c.key(), SigningPubKey: c.key(), TLSPin: c.key()},
		[]records.Peer{{Name: "admin", WGPubKey: c.key(), SigningPubKey: c.key()}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.feed, err = feed.New(reg, rules.DefaultRules(), feed.Options{}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) key() []byte {
	c.keys++
	k := sha256.Sum256([]byte(fmt.Sprintf("key %d", c.keys)))
	return k[:]
}

// join activates, registers and records the pastiche of a new node, in
// the hordes sharks and jets alternately.
func (c *cluster) join() *node {
	i := len(c.nodes)
	n := &node{name: nodeName(i), horde: []string{"sharks", "jets"}[i%2], cidr: netip.MustParsePrefix("198.18.0.0/16")}
	n.number = c.names.number(n.name)
	ep := fmt.Sprintf("127.2.0.%d:%d", i+1, nodePubPort)
	res, err := c.reg.Reserve(ep, n.name, c.key(), nil, true)
	if err != nil {
		c.t.Fatal(err)
	}
	n.vpnIP = res.VPNIP
	if _, err := c.reg.Activate(res.VPNIP, records.Activated{Name: n.name, Horde: n.horde, WGEndpoint: "127.2.0.1:51999",
		WGPubKey: c.key(), SigningPubKey: c.key()}); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.reg.SetRegistration(res.VPNIP, c.key(), ""); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.reg.SetServices(res.VPNIP, records.Services{
		Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
		Clients:   []records.ServiceClient{{Service: "pastiche", PubKey: c.key()}},
	}); err != nil {
		c.t.Fatal(err)
	}
	n.phase.Store(int32(phaseJoined))
	c.nodes = append(c.nodes, n)
	return n
}

// sync has every node apply the feed's answer from its revision, encoded
// and decoded as on the wire.
func (c *cluster) sync() {
	for _, n := range c.nodes {
		if n.getPhase() == phaseRemoved {
			continue
		}
		u, err := c.feed.Answer(n.vpnIP, n.state.rev)
		if err != nil {
			c.t.Fatal(err)
		}
		msg, err := vpnapi.UpdateToProto(u, n.name)
		if err != nil {
			c.t.Fatal(err)
		}
		if u, err = vpnapi.UpdateFromProto(msg); err != nil {
			c.t.Fatal(err)
		}
		if !n.state.apply(&n.h, c.names, n.cidr, n.name, u) {
			c.t.Fatalf("%s refused revision %d", n.name, u.Revision)
		}
	}
}

// problems is what the reference finds wrong, by node.
func (c *cluster) problems() []string {
	ref, err := newReference(c.reg, c.names)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []string
	var h hasher
	for _, n := range c.nodes {
		if p := ref.check(&h, n); p != "" {
			out = append(out, n.name+": "+p)
		}
	}
	return out
}

func TestStateFollowsTheFeed(t *testing.T) {
	c := newCluster(t)
	for range 5 {
		c.join()
		c.sync()
	}
	for i := range 3 {
		c.join()
		p := c.nodes[i]
		if err := c.reg.SetWGEndpoint(p.vpnIP, fmt.Sprintf("127.2.0.%d:52000", i+1)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.reg.Remove(c.nodes[i+3].vpnIP); err != nil {
			t.Fatal(err)
		}
		c.nodes[i+3].phase.Store(int32(phaseRemoved))
		c.sync()
		if got := c.problems(); len(got) > 0 {
			t.Fatalf("after change %d: %s", i, strings.Join(got, "; "))
		}
	}
	n := c.nodes[0]
	if n.state.nPeers != 2+len(c.nodes)-3 {
		t.Errorf("%s holds %d peers, want the coordinator, the admin and %d nodes", n.name, n.state.nPeers, len(c.nodes)-3)
	}
	if n.state.nSlices < 2 {
		t.Errorf("%s holds %d slices, want its horde's and the coordinator's", n.name, n.state.nSlices)
	}
}

func TestReferenceFindsWhatDiffers(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(c *cluster, n *node)
		want   string
	}{
		{"a peer missing", func(c *cluster, n *node) {
			n.state.peers = set(n.state.peers, offset(n.cidr, c.nodes[1].vpnIP), 0, &n.state.nPeers)
		}, "peer at offset"},
		{"a stale peer", func(c *cluster, n *node) {
			off := offset(n.cidr, c.nodes[1].vpnIP)
			n.state.peers[off]++
		}, "peer at offset"},
		{"a slice missing", func(c *cluster, n *node) {
			n.state.slices = set(n.state.slices, c.nodes[2].number, 0, &n.state.nSlices)
		}, "slices held"},
		{"a wrong slice", func(c *cluster, n *node) {
			n.state.slices[c.nodes[2].number]++
		}, "slice of node number"},
		{"a wrong catalog", func(c *cluster, n *node) { n.state.local++ }, "local part"},
		{"removed here only", func(c *cluster, n *node) { n.phase.Store(int32(phaseRemoved)) }, "removed here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			for range 4 {
				c.join()
			}
			c.sync()
			if got := c.problems(); len(got) > 0 {
				t.Fatalf("before: %s", strings.Join(got, "; "))
			}
			tt.break_(c, c.nodes[0])
			got := c.problems()
			if len(got) != 1 || !strings.Contains(got[0], tt.want) {
				t.Errorf("problems = %q, want one for %s saying %q", got, c.nodes[0].name, tt.want)
			}
		})
	}
}
