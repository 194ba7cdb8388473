package pastiche

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestStat(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	h2 := tc.dial(t, "h2", "pastiche@h2", "h1")
	if _, err := putMsgs(context.Background(), h2, header("f", 3, nil), chunk("abc")); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("abc"))
	got, err := h2.Stat(context.Background(), &pastichepb.StatRequest{Name: "f"})
	if err != nil {
		t.Fatal(err)
	}
	want := &pastichepb.StatResponse{Name: "f", Size: 3, Sha256: sum[:]}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Stat (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		test   string
		client pastichepb.PasticheClient
		name   string
		code   codes.Code
		msg    string
	}{
		{"missing file", h2, "g", codes.NotFound, "no file g is stored here"},
		{"path as name", h2, "../f", codes.InvalidArgument, "starts with '.'"},
		{"temporary file", h2, ".incoming-1", codes.InvalidArgument, "starts with '.'"},
		{"client of another horde", tc.dial(t, "h3", "pastiche@h3", "h1"), "f", codes.Unauthenticated, "pastiche@h3"},
		{"fabric-admin may not stat", tc.dial(t, "c", "fabric-admin@c", "h1"), "f", codes.PermissionDenied,
			"Stat of pastiche@h1 is for pastiche clients only, not fabric-admin@c"},
	} {
		t.Run(tt.test, func(t *testing.T) {
			_, err := tt.client.Stat(context.Background(), &pastichepb.StatRequest{Name: tt.name})
			checkStatus(t, err, tt.code, tt.msg)
		})
	}
}
