package fabric_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/testbed/nshost"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// testReplayedPut is the regression test of defect 3 of issue 9: a
// pastiche Put that pastiche@h3 sent to h2, replayed unchanged by h2 (a
// compromised node), was accepted by h4 and by the coordinator, each
// storing the file as sent by h3, and by h2 itself after its fabricd
// restarted. Now the signature covers its endpoint, and a restarted
// endpoint refuses every signature it could have accepted before.
func (c *ripstop) testReplayedPut(t *testing.T, coordinator, h2, h3, h4 *nshost.Host) {
	ctx := context.Background()
	const name = "replayed.bin"
	c.learnFloor(t, h3, h2)
	put := c.signedPut(t, h3, h2, name, []byte("sent by h3, once"))
	if _, err := c.sendPut(t, h2, put); err != nil {
		t.Fatalf("the original Put, h3 -> h2: %v", err)
	}
	stored := func(h *nshost.Host) bool {
		_, err := os.Stat(filepath.Join(h.Dir(), "state", "pastiche", name))
		return err == nil
	}
	if !stored(h2) {
		t.Fatalf("h2 did not store %s", name)
	}
	for _, target := range []*nshost.Host{h4, coordinator} {
		_, err := c.sendPut(t, target, put)
		want := "signature rejected: signed for another endpoint: it is addressed to " + put.host + ", this endpoint is " + c.pasticheAddr(t, target)
		if s := grpcstatus.Convert(err); s.Code() != codes.Unauthenticated || !strings.Contains(s.Message(), want) {
			t.Errorf("the Put replayed to %s: %v; want Unauthenticated %q", target.Name(), err, want)
		}
		if stored(target) {
			t.Errorf("%s stored the replayed %s", target.Name(), name)
		}
	}
	if _, err := c.sendPut(t, h2, put); grpcstatus.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "replayed signature") {
		t.Errorf("the Put replayed to h2: %v; want a replayed signature", err)
	}

	// h2 restarts: its replay cache starts empty.
	if err := os.Remove(filepath.Join(h2.Dir(), "state", "pastiche", name)); err != nil {
		t.Fatal(err)
	}
	if err := c.f.StopFabricd(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if err := c.f.StartFabricd(ctx, h2); err != nil {
		t.Fatal(err)
	}
	if out, err := c.f.Watch(ctx, len(c.hosts), time.Minute, serviceid.Pastiche); err != nil {
		t.Fatalf("fabric watch after h2's restart: %v\n%s", err, out)
	}
	_, err := c.sendPut(t, h2, put)
	if s := grpcstatus.Convert(err); s.Code() != codes.Unauthenticated || !strings.Contains(s.Message(), "signature rejected: signature dated before this endpoint's start") {
		t.Errorf("the Put replayed to h2 after its restart: %v; want a refusal for its date", err)
	}
	if stored(h2) {
		t.Errorf("h2 stored the replayed %s after its restart", name)
	}
	// Honest clients cope: their first calls after the restart are refused
	// for their date and signed again (the relay's Send stream to h2, then
	// h2's Put stream to h3).
	c.send(t, h2, h3, "after-h2-restart.bin", []byte("h2 is back"))
	c.send(t, h3, h2, "to-h2-after-restart.bin", []byte("h2 is back"))
}

// recordedPut is a Put stream signed by hand: the call's metadata, the
// host it was signed for, and its messages in their FSM1 envelopes.
type recordedPut struct {
	host string
	md   metadata.MD
	envs [][]byte
}

// signedPut signs a Put of data as name to target's pastiche, as the
// pastiche client of from (by from's reeve), following the documented
// wire format of signed streams (internal/signedrpc): the call signed over
// a fresh nonce, each message in an envelope chained to the call's
// signature.
func (c *ripstop) signedPut(t *testing.T, from, target *nshost.Host, name string, data []byte) recordedPut {
	t.Helper()
	keyID := serviceid.ID(serviceid.Pastiche, from.Name())
	sign := c.signer(from, keyID)
	host := c.pasticheAddr(t, target)
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	h, err := httpsig.Sign(keyID, "POST", pastichepb.Pastiche_Put_FullMethodName, host, c.clock(host, time.Now()), sha256.Sum256(nonce), sign)
	if err != nil {
		t.Fatal(err)
	}
	p, err := httpsig.ParseSignature(h.Signature)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	msgs := []*pastichepb.PutRequest{
		{Msg: &pastichepb.PutRequest_Header{Header: &pastichepb.FileHeader{Name: name, Size: int64(len(data)), Sha256: sum[:]}}},
		{Msg: &pastichepb.PutRequest_Chunk{Chunk: data}},
	}
	chain := sha256.Sum256(p.Signature)
	put := recordedPut{host: host, md: metadata.Pairs("date", h.Date, "digest", h.Digest, "signature", h.Signature,
		"fabric-stream-nonce", base64.StdEncoding.EncodeToString(nonce))}
	for _, m := range msgs {
		payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		ps := sha256.Sum256(payload)
		chain = sha256.Sum256(append(chain[:], ps[:]...))
		sig, err := sign(append([]byte("fabric signed stream v1\n"), chain[:]...))
		if err != nil {
			t.Fatal(err)
		}
		env := append(append(append([]byte("FSM1"), chain[:]...), sig...), payload...)
		put.envs = append(put.envs, env)
	}
	return put
}

// sendPut sends put, unchanged (its :authority is the host it was signed
// for), to target's pastiche and returns its answer.
func (c *ripstop) sendPut(t *testing.T, target *nshost.Host, put recordedPut) (*pastichepb.PutResponse, error) {
	t.Helper()
	conn := c.dial(t, target, grpc.WithAuthority(put.host), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), put.md), 30*time.Second)
	defer cancel()
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, pastichepb.Pastiche_Put_FullMethodName)
	if err != nil {
		return nil, err
	}
	for _, env := range put.envs {
		if err := s.SendMsg(&rawMsg{env}); errors.Is(err, io.EOF) {
			break // the endpoint ended the call; RecvMsg says why
		} else if err != nil {
			return nil, err
		}
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	var raw rawMsg
	if err := s.RecvMsg(&raw); err != nil {
		return nil, err
	}
	resp := &pastichepb.PutResponse{}
	return resp, proto.Unmarshal(raw.b, resp)
}

// rawMsg is a message as bytes on the wire; rawCodec sends and receives
// them as they are.
type rawMsg struct{ b []byte }

type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawMsg).b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawMsg).b = data.Materialize()
	return nil
}
