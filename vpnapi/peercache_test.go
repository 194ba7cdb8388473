package vpnapi_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestEncodeSharedPeers: an answer whose long peer list is encoded once
// and shared decodes, at the node, to the same message as one encoded
// whole, whatever the list and whether it was encoded before.
func TestEncodeSharedPeers(t *testing.T) {
	peers := make([]records.Peer, 300)
	for i := range peers {
		peers[i] = records.Peer{Name: fmt.Sprintf("n%03d", i), Role: records.RoleNode, State: records.StateActive,
			VPNIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 250)}), WGPubKey: randomBytes(32), WGEndpoint: fmt.Sprintf("192.0.2.%d:51820", i%250)}
	}
	peers[0].Role, peers[0].TLSPin, peers[0].SigningPubKey = records.RoleCoordinator, randomBytes(32), randomBytes(32)
	other := append([]records.Peer(nil), peers...)
	other[100].WGEndpoint = "192.0.2.9:1"
	full := func(ps []records.Peer) update.Update {
		return update.Update{Revision: 7, Kind: update.Full, Peers: ps,
			View:        update.ViewUpdate{Kind: update.ViewFull, Full: view.View{Catalog: []view.CatalogEntry{{Client: "pastiche@n1", Service: "pastiche"}}}},
			HasSSHUsers: true, SSHUsers: []records.SSHUser{{Name: "ops", Keys: []string{"ssh-ed25519 AAAA ops"}}}}
	}
	enc := &vpnapi.Encoder{}
	for _, tc := range []struct {
		name string
		u    update.Update
	}{
		{name: "few peers", u: full(peers[:10])},
		{name: "the least shared", u: full(peers[:64])},
		{name: "all peers", u: full(peers)},
		{name: "all peers again", u: full(peers)},
		{name: "a shorter list of the same array", u: full(peers[:200])},
		{name: "the same peers in another list", u: full(other)},
		{name: "a delta", u: update.Update{Revision: 8, Kind: update.Delta, Peers: peers[50:150], RemovedPeers: []netip.Addr{netip.MustParseAddr("203.0.113.251")}}},
		{name: "no peers", u: update.Update{Revision: 8, Kind: update.Unchanged}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := vpnapi.UpdateToProto(tc.u, "n1")
			if err != nil {
				t.Fatal(err)
			}
			msg, err := enc.Encode(tc.u, "n1")
			if err != nil {
				t.Fatal(err)
			}
			b, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			got := &vpnapipb.WatchUpdate{}
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("decoded answer (-want +got):\n%s", diff)
			}
		})
	}
	// More lists than the memo keeps: each still encodes its own.
	for i := range 20 {
		ps := append([]records.Peer(nil), peers[i:]...)
		u := full(ps)
		want, _ := vpnapi.UpdateToProto(u, "n1")
		msg, err := enc.Encode(u, "n1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := proto.Marshal(msg)
		got := &vpnapipb.WatchUpdate{}
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(want, got) {
			t.Errorf("list %d: decoded answer differs", i)
		}
	}
}
