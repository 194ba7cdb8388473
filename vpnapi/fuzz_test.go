package vpnapi_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

// FuzzUpdateFromProto: a node decodes any watch update the coordinator
// may send without failing other than with an error, and what it decodes
// encodes (for the node the view names) to an update that decodes the
// same: nothing of an accepted update is lost or changed on the way.
func FuzzUpdateFromProto(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	seeds := []update.Update{
		{Revision: 3, Kind: update.Full, Peers: []records.Peer{
			{Name: "coord", Role: records.RoleCoordinator, State: records.StateActive, VPNIP: netip.MustParseAddr("203.0.113.1"), WGPubKey: key, WGEndpoint: "192.0.2.1:51820", TLSPin: key, SigningPubKey: key},
			{Name: "n1", Role: records.RoleNode, State: records.StateActive, VPNIP: netip.MustParseAddr("203.0.113.3"), WGPubKey: key, WGEndpoint: "[2001:db8::3]:51820"},
		}, View: update.ViewUpdate{Kind: update.ViewFull, Full: view.View{
			Whitelist: []view.WhitelistEntry{{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: key}},
			Endpoints: []view.EndpointEntry{{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n2", Address: "203.0.113.4:7450"}},
			Catalog:   []view.CatalogEntry{{Client: "pastiche@n1", Service: "pastiche"}},
		}}, HasSSHUsers: true, SSHUsers: []records.SSHUser{{Name: "alice", Keys: []string{"ssh-ed25519 AAAA"}}}},
		{Revision: 4, Kind: update.Delta, RemovedPeers: []netip.Addr{netip.MustParseAddr("203.0.113.5")},
			View: update.ViewUpdate{Kind: update.ViewDelta, Slices: []view.Slice{{Node: "n2"}}}},
		{Revision: 5, Kind: update.Unchanged},
		{Revision: 6, Kind: update.Removed},
	}
	for _, u := range seeds {
		p, err := vpnapi.UpdateToProto(u, "n1")
		if err != nil {
			f.Fatal(err)
		}
		data, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p vpnapipb.WatchUpdate
		if err := proto.Unmarshal(data, &p); err != nil {
			return
		}
		u, err := vpnapi.UpdateFromProto(&p)
		if err != nil {
			return
		}
		self := p.GetView().GetNode()
		again, err := vpnapi.UpdateToProto(u, self)
		if err != nil {
			t.Fatalf("a decoded update does not encode: %v\nupdate: %+v", err, u)
		}
		u2, err := vpnapi.UpdateFromProto(again)
		if err != nil {
			t.Fatalf("a decoded update, encoded again, does not decode: %v", err)
		}
		if diff := cmp.Diff(u, u2, cmpOpts); diff != "" {
			t.Fatalf("update decoded, encoded and decoded again differs (-first +second):\n%s", diff)
		}
	})
}
