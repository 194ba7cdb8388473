package coordinator_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// FuzzStewardUpdateServices sends any protobuf as n1's services, signed by
// its reeve, to the real steward over gRPC. The steward either records
// exactly those services (sorted) or refuses with InvalidArgument and
// changes nothing.
func FuzzStewardUpdateServices(f *testing.F) {
	key := pub(newKey())
	for _, req := range []*vpnapipb.UpdateServicesRequest{
		{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("pastiche", 7450), endpoint("ledger", 9000)}, Clients: []*vpnapipb.ServiceClient{client("pastiche", key)}},
		{},
		{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 0)}},
		{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("Ledger", 70000)}},
		{Endpoints: []*vpnapipb.ServiceEndpoint{endpoint("ledger", 1), endpoint("ledger", 2)}},
		{Clients: []*vpnapipb.ServiceClient{client("registry", key), client("billing", key[:31])}},
		{Endpoints: manyEndpoints(65)},
	} {
		data, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	fx := newStewardFixture(f)
	n1 := fx.nodes["n1"].vpnIP
	var seq uint64
	f.Fuzz(func(t *testing.T, data []byte) {
		var req vpnapipb.UpdateServicesRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return // no client can send it: gRPC decodes before the steward
		}
		// An unknown field (the steward ignores it) makes every call's
		// body unique: identical bodies signed by one key get dates a
		// second apart (httpsig.DateSource), so the fuzzer's repeats of
		// one input (minimizing) would wait a second each.
		seq++
		m := req.ProtoReflect()
		m.SetUnknown(protowire.AppendVarint(protowire.AppendTag(m.GetUnknown(), 1000, protowire.VarintType), seq))
		before, beforeRev := fx.reg.Services()[n1], fx.reg.Revision()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := fx.steward.UpdateServices(ctx, &req)
		after := fx.reg.Services()[n1]
		switch status.Code(err) {
		case codes.OK:
			want := records.Services{}
			for _, e := range req.GetEndpoints() {
				want.Endpoints = append(want.Endpoints, records.ServiceEndpoint{Service: e.GetService(), Port: uint16(e.GetPort())})
			}
			for _, c := range req.GetClients() {
				want.Clients = append(want.Clients, records.ServiceClient{Service: c.GetService(), PubKey: c.GetPubKey()})
			}
			slices.SortFunc(want.Endpoints, func(a, b records.ServiceEndpoint) int { return cmpString(a.Service, b.Service) })
			slices.SortFunc(want.Clients, func(a, b records.ServiceClient) int { return cmpString(a.Service, b.Service) })
			after.Revision = 0
			if diff := cmp.Diff(want, after, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })); diff != "" {
				t.Fatalf("accepted services recorded otherwise (-request +recorded):\n%s", diff)
			}
		case codes.InvalidArgument:
			if diff := cmp.Diff(before, after); diff != "" || fx.reg.Revision() != beforeRev {
				t.Fatalf("a refused update (%v) changed the services (revision %d -> %d):\n%s", err, beforeRev, fx.reg.Revision(), diff)
			}
		default:
			t.Fatalf("UpdateServices = %v: want OK or InvalidArgument", err)
		}
	})
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
