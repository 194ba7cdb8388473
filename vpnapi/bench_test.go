package vpnapi_test

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/protobuf/proto"
)

// benchFeed is a feed over n joined and registered nodes in two hordes,
// each running pastiche, under the default rules (as fabric-scale's).
func benchFeed(b *testing.B, n int) (*registry.Registry, *feed.Feed, []netip.Addr) {
	b.Helper()
	key := func(what string) []byte { k := sha256.Sum256([]byte(what)); return k[:] }
	st, err := boltstore.Open(filepath.Join(b.TempDir(), "state.db"), boltstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	reg, err := registry.Open(st)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := reg.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("198.18.0.0/16")},
		records.Peer{Name: "coord", WGEndpoint: "192.0.2.1:51820", WGPubKey: key("coord wg"), SigningPubKey: key("coord signing")},
		nil, nil, nil); err != nil {
		b.Fatal(err)
	}
	var ips []netip.Addr
	for i := range n {
		name := fmt.Sprintf("n%05d", i)
		p, err := reg.Reserve(fmt.Sprintf("192.0.2.%d:%d", 2+i%250, 7443+i/250), name, nil, nil, false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := reg.Activate(p.VPNIP, records.Activated{Name: name, Horde: []string{"a", "b"}[i%2],
			WGEndpoint: fmt.Sprintf("192.0.2.%d:%d", 2+i%250, 51820+i/250), WGPubKey: key(name + " wg"), SigningPubKey: key(name + " signing")}); err != nil {
			b.Fatal(err)
		}
		if _, err := reg.SetRegistration(p.VPNIP, key(name+" reeve"), ""); err != nil {
			b.Fatal(err)
		}
		if _, err := reg.SetServices(p.VPNIP, records.Services{
			Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
			Clients:   []records.ServiceClient{{Service: "pastiche", PubKey: key(name + " pastiche")}},
		}); err != nil {
			b.Fatal(err)
		}
		ips = append(ips, p.VPNIP)
	}
	f, err := feed.New(reg, rules.DefaultRules(), feed.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return reg, f, ips
}

// answerSize computes, converts and encodes the answer of the node at ip
// from after as the server does, and returns its size on the wire.
func answerSize(b *testing.B, f *feed.Feed, enc *vpnapi.Encoder, ip netip.Addr, after uint64) int {
	u, err := f.Answer(ip, after)
	if err != nil {
		b.Fatal(err)
	}
	msg, err := enc.Encode(u, "n")
	if err != nil {
		b.Fatal(err)
	}
	out, err := proto.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	return len(out)
}

// BenchmarkFullAnswer is the coordinator's work for one full snapshot at
// 10,000 nodes (what a node behind the log gets): the feed's answer, its
// conversion to the wire's messages and their encoding as the server does
// them, for node after node at the same revision.
func BenchmarkFullAnswer(b *testing.B) {
	_, f, ips := benchFeed(b, 10000)
	enc := &vpnapi.Encoder{}
	size := 0
	for i := 0; b.Loop(); i++ {
		size = answerSize(b, f, enc, ips[i%len(ips)], 0)
	}
	b.ReportMetric(float64(size), "bytes/answer")
}

// BenchmarkDeltaAnswer is the coordinator's work for one change of a
// node's WireGuard endpoint at 10,000 nodes: every node's answer from the
// revision before, converted and encoded as the server does (per
// answer).
func BenchmarkDeltaAnswer(b *testing.B) {
	reg, f, ips := benchFeed(b, 10000)
	enc := &vpnapi.Encoder{}
	size := 0
	for i := 0; b.Loop(); i++ {
		if i%len(ips) == 0 {
			b.StopTimer()
			if err := reg.SetWGEndpoint(ips[0], fmt.Sprintf("192.0.2.2:%d", 1000+i/len(ips)%1000)); err != nil {
				b.Fatal(err)
			}
			for f.Revision() != reg.Revision() {
			}
			b.StartTimer()
		}
		size = answerSize(b, f, enc, ips[i%len(ips)], f.Revision()-1)
	}
	b.ReportMetric(float64(size), "bytes/answer")
}

// BenchmarkDecodeFull is a node's work for one full snapshot at 10,000
// nodes: decoding the message from the wire and converting it to an
// update (what core and fabric-scale's simulated nodes do with it).
func BenchmarkDecodeFull(b *testing.B) {
	reg, f, ips := benchFeed(b, 10000)
	self, _ := reg.Peer(ips[0])
	u, err := f.Answer(self.VPNIP, 0)
	if err != nil {
		b.Fatal(err)
	}
	msg, err := (&vpnapi.Encoder{}).Encode(u, self.Name)
	if err != nil {
		b.Fatal(err)
	}
	wire, err := proto.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var got vpnapipb.WatchUpdate
		if err := proto.Unmarshal(wire, &got); err != nil {
			b.Fatal(err)
		}
		if _, err := vpnapi.UpdateFromProto(&got); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(wire)), "bytes/answer")
}
