package pubapi

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeSendStream replays msgs to a chunkReader, then io.EOF.
type fakeSendStream struct {
	grpc.ClientStreamingServer[pubapipb.PasticheSendRequest, pubapipb.PasticheSendResponse]
	msgs []*pubapipb.PasticheSendRequest
}

func (f *fakeSendStream) Recv() (*pubapipb.PasticheSendRequest, error) {
	if len(f.msgs) == 0 {
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func chunk(s string) *pubapipb.PasticheSendRequest {
	return &pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Chunk{Chunk: []byte(s)}}
}

func TestChunkReader(t *testing.T) {
	header := &pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Header{Header: &pubapipb.PasticheSendHeader{}}}
	for _, tt := range []struct {
		name    string
		msgs    []*pubapipb.PasticheSendRequest
		want    string
		wantErr string
	}{
		{name: "chunks in order", msgs: []*pubapipb.PasticheSendRequest{chunk("ab"), chunk("cde"), chunk("f")}, want: "abcdef"},
		{name: "empty chunks skipped", msgs: []*pubapipb.PasticheSendRequest{chunk(""), chunk("a"), chunk(""), chunk("b")}, want: "ab"},
		{name: "no data", want: ""},
		{name: "second header", msgs: []*pubapipb.PasticheSendRequest{chunk("a"), header}, want: "a", wantErr: "a second header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &chunkReader{stream: &fakeSendStream{msgs: tt.msgs}}
			var got bytes.Buffer
			buf := make([]byte, 2) // smaller than a chunk: reads split chunks
			_, err := io.CopyBuffer(struct{ io.Writer }{&got}, struct{ io.Reader }{r}, buf)
			if got.String() != tt.want {
				t.Errorf("read %q, want %q", got.String(), tt.want)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// registryCore is a Core that has a registry.
type registryCore struct {
	Core
	reg *registry.Registry
}

func (c registryCore) Registry() (core.Registry, bool) { return c.reg, true }

func TestExplainRefusal(t *testing.T) {
	reg, err := registry.Open(store.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	coordinator := records.Peer{Name: "c", Horde: "sharks", PublicEndpoint: "192.0.2.1:7443", WGPubKey: bytes.Repeat([]byte{1}, 32), SigningPubKey: bytes.Repeat([]byte{2}, 32)}
	if _, err := reg.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")}, coordinator, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	for i, n := range []struct{ name, horde string }{{"s1", "sharks"}, {"j1", "jets"}} {
		p, err := reg.Reserve("192.0.2.1"+string(rune('0'+i))+":7443", n.name, nil, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Activate(p.VPNIP, records.Activated{Name: n.name, Horde: n.horde,
			WGPubKey: bytes.Repeat([]byte{byte(10 + i)}, 32), SigningPubKey: bytes.Repeat([]byte{byte(20 + i)}, 32)}); err != nil {
			t.Fatal(err)
		}
	}
	s := NewServer(Config{Core: registryCore{reg: reg}})
	denied := status.Error(codes.PermissionDenied, "pastiche@s1 may not send to j1")
	for _, tt := range []struct {
		name     string
		err      error
		from, to string
		want     string
	}{
		{"different hordes", denied, "s1", "j1", "s1 (horde sharks) and j1 (horde jets) are in different hordes and no rule lets pastiche reach pastiche across hordes: pastiche@s1 may not send to j1"},
		{"same horde", denied, "c", "s1", "pastiche@s1 may not send to j1"},
		{"unknown target", denied, "s1", "x9", "pastiche@s1 may not send to j1"},
		{"other code", status.Error(codes.Unavailable, "down"), "s1", "j1", "down"},
		{"not a status", errors.New("plain"), "s1", "j1", "plain"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := s.explainRefusal(tt.err, tt.from, tt.to)
			if msg := status.Convert(got).Message(); msg != tt.want || status.Code(got) != status.Code(tt.err) {
				t.Errorf("explainRefusal = %v, want code %v and %q", got, status.Code(tt.err), tt.want)
			}
		})
	}
}
