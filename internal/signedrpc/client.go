package signedrpc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fabricmesh/fabric/internal/httpsig"
)

// Metadata keys of a signed call.
const (
	mdDate        = "date"
	mdDigest      = "digest"
	mdSignature   = "signature"
	mdStreamNonce = "fabric-stream-nonce" // streams only: what the digest covers
)

// nonceSize is the size of a stream's nonce, in bytes.
const nonceSize = 16

// method is the HTTP method of every gRPC call.
const method = "POST"

// Signer signs data with the private key of keyID (a client registered
// with reeve).
type Signer interface {
	Sign(ctx context.Context, keyID string, data []byte) ([]byte, error)
}

// DialOptions makes a ClientConn sign every call as keyID with s: the
// client codec (deterministic marshalling, scoped to this ClientConn) and
// the unary and stream client interceptors.
func DialOptions(keyID string, s Signer) []grpc.DialOption {
	c := &client{keyID: keyID, signer: s, dates: dateSourceFor(keyID), now: time.Now}
	return c.dialOptions()
}

func (c *client) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(clientCodec{})),
		grpc.WithChainUnaryInterceptor(c.unary),
		grpc.WithChainStreamInterceptor(c.stream),
	}
}

// dateSources holds one DateSource per key ID in the process, shared by
// every ClientConn signing with that key, so that identical calls on two
// connections still get distinct dates.
var dateSources sync.Map // keyID -> *httpsig.DateSource

func dateSourceFor(keyID string) *httpsig.DateSource {
	if ds, ok := dateSources.Load(keyID); ok {
		return ds.(*httpsig.DateSource)
	}
	ds, _ := dateSources.LoadOrStore(keyID, httpsig.NewDateSource(httpsig.DateSourceConfig{}))
	return ds.(*httpsig.DateSource)
}

type client struct {
	keyID  string
	signer Signer
	dates  *httpsig.DateSource // dates of unary calls
	now    func() time.Time
}

func (c *client) unary(ctx context.Context, fullMethod string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "signing call %s: request %T is not a proto message", fullMethod, req)
	}
	body, err := deterministic.Marshal(msg)
	if err != nil {
		return status.Errorf(codes.Internal, "signing call %s: marshalling request: %v", fullMethod, err)
	}
	sum := sha256.Sum256(body)
	date, err := c.unaryDate(ctx, fullMethod, sum)
	if err != nil {
		return err
	}
	md, _, err := c.signCall(ctx, fullMethod, date, sum)
	if err != nil {
		return err
	}
	return invoker(metadata.NewOutgoingContext(ctx, md), fullMethod, &preEncoded{body}, reply, cc, opts...)
}

// unaryDate is the date of a unary call to fullMethod whose request bytes
// have SHA-256 sum: the key's DateSource keeps identical requests apart,
// waiting when a burst of them runs too far ahead of the clock.
func (c *client) unaryDate(ctx context.Context, fullMethod string, sum [sha256.Size]byte) (time.Time, error) {
	date, wait := c.dates.Next(httpsig.RequestTarget(method, fullMethod), httpsig.DigestOfSum(sum), c.now())
	if err := sleep(ctx, wait); err != nil {
		return time.Time{}, status.FromContextError(err).Err()
	}
	return date, nil
}

// stream signs a stream over a fresh nonce: its digest differs from every
// other stream's, so the current date is enough to keep signatures
// distinct and the DateSource is not consulted.
func (c *client) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, fullMethod string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	nonce := newNonce()
	md, sig, err := c.signCall(ctx, fullMethod, c.now(), sha256.Sum256(nonce))
	if err != nil {
		return nil, err
	}
	md.Set(mdStreamNonce, base64.StdEncoding.EncodeToString(nonce))
	ctx = metadata.NewOutgoingContext(ctx, md)
	cs, err := streamer(ctx, desc, cc, fullMethod, opts...)
	if err != nil {
		return nil, err
	}
	return &signedClientStream{ClientStream: cs, ctx: ctx, c: c, chain: firstChain(sig)}, nil
}

// newNonce returns nonceSize random bytes (crypto/rand.Read does not fail:
// it crashes the program if the system's generator does).
func newNonce() []byte {
	nonce := make([]byte, nonceSize)
	_, _ = rand.Read(nonce)
	return nonce
}

// signCall signs a call to fullMethod dated date whose digest covers bytes
// with SHA-256 sum, and returns a copy of ctx's outgoing metadata with
// date, digest and signature set, and the raw signature.
func (c *client) signCall(ctx context.Context, fullMethod string, date time.Time, sum [sha256.Size]byte) (metadata.MD, []byte, error) {
	var sig []byte
	h, err := httpsig.Sign(c.keyID, method, fullMethod, date, sum, func(data []byte) ([]byte, error) {
		var err error
		sig, err = c.sign(ctx, data)
		return sig, err
	})
	if err != nil {
		return nil, nil, signError{fmt.Errorf("signing call %s: %w", fullMethod, err)}
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(mdDate, h.Date)
	md.Set(mdDigest, h.Digest)
	md.Set(mdSignature, h.Signature)
	return md, sig, nil
}

// sign asks the signer for an ed25519 signature of data.
func (c *client) sign(ctx context.Context, data []byte) ([]byte, error) {
	sig, err := c.signer.Sign(ctx, c.keyID, data)
	if err != nil {
		return nil, err
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("signer returned %d bytes for keyId %q, an ed25519 signature is %d", len(sig), c.keyID, ed25519.SignatureSize)
	}
	return sig, nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// signedClientStream wraps every message it sends in a signed envelope.
type signedClientStream struct {
	grpc.ClientStream
	ctx   context.Context
	c     *client
	chain chain
	n     int
}

func (s *signedClientStream) SendMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "signing stream message: %T is not a proto message", m)
	}
	payload, err := deterministic.Marshal(msg)
	if err != nil {
		return status.Errorf(codes.Internal, "signing stream message: marshalling: %v", err)
	}
	next := s.chain.next(payload)
	sig, err := s.c.sign(s.ctx, next.signingInput())
	if err != nil {
		return signError{fmt.Errorf("signing message %d of the stream: %w", s.n+1, err)}
	}
	if err := s.ClientStream.SendMsg(&preEncoded{seal(next, sig, payload)}); err != nil {
		return err
	}
	s.chain, s.n = next, s.n+1
	return nil
}

// signError is a signer failure: it unwraps to the cause and reads as
// codes.Unavailable to gRPC status functions.
type signError struct{ err error }

func (e signError) Error() string { return e.err.Error() }
func (e signError) Unwrap() error { return e.err }
func (e signError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.err.Error())
}
