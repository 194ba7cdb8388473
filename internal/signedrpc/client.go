package signedrpc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/fabricmesh/fabric/internal/httpsig"
)

// Metadata keys of a signed call.
const (
	mdAuthority   = ":authority" // the signed host header: the endpoint's host:port
	mdDate        = "date"
	mdDigest      = "digest"
	mdSignature   = "signature"
	mdStreamNonce = "fabric-stream-nonce" // streams only: what the digest covers
)

// Trailer keys of a call refused for its date alone (dated at or before the
// endpoint's floor, or a replay): the dates it accepted then, inclusive.
const (
	mdEarliestDate = "fabric-earliest-date"
	mdLatestDate   = "fabric-latest-date"
)

// maxFloorWait bounds the wait of a client signing again after a refusal
// for its date: an endpoint's accepted dates open at most a second after
// it starts.
const maxFloorWait = 3 * time.Second

// maxAttempts bounds how many times a call is signed: a refusal for its
// date is followed by a second attempt, and a second such refusal (the
// same call signed by an earlier process of the client, with the same
// date, already accepted) by a third.
const maxAttempts = 3

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
	c := &client{keyID: keyID, signer: s, dates: dateSourceFor(keyID), floors: processFloors, now: time.Now}
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
	floors *floors             // earliest dates of endpoints that refused a date
	now    func() time.Time
	host   atomic.Pointer[targetAndHost] // the last target's host
}

type targetAndHost struct{ target, host string }

// hostOf is the host of cc's target (see targetHost), remembered for the
// last target: a client's ClientConn does not change its target.
func (c *client) hostOf(cc *grpc.ClientConn) (string, error) {
	target := cc.Target()
	if th := c.host.Load(); th != nil && th.target == target {
		return th.host, nil
	}
	host, err := targetHost(target)
	if err != nil {
		return "", err
	}
	c.host.Store(&targetAndHost{target: target, host: host})
	return host, nil
}

// unary signs a unary call. If the endpoint refuses it for its date alone
// (it restarted a moment ago, its replay cache is full, or it already
// accepted this very signature, made by an earlier process of this client
// with the same date), the call is signed again with a date the endpoint
// said it accepts: nothing ran, the endpoint refused before its handler.
func (c *client) unary(ctx context.Context, fullMethod string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "signing call %s: request %T is not a proto message", fullMethod, req)
	}
	body, err := deterministic.Marshal(msg)
	if err != nil {
		return status.Errorf(codes.Internal, "signing call %s: marshalling request: %v", fullMethod, err)
	}
	host, err := c.hostOf(cc)
	if err != nil {
		return status.Errorf(codes.Internal, "signing call %s: %v", fullMethod, err)
	}
	sum := sha256.Sum256(body)
	for attempt := 0; ; attempt++ {
		date, err := c.unaryDate(ctx, host, fullMethod, sum)
		if err != nil {
			return err
		}
		md, _, err := c.signCall(ctx, fullMethod, host, date, sum)
		if err != nil {
			return err
		}
		var trailer metadata.MD
		callOpts := append(opts[:len(opts):len(opts)], grpc.CallAuthority(host), grpc.Trailer(&trailer))
		err = invoker(metadata.NewOutgoingContext(ctx, md), fullMethod, &preEncoded{body}, reply, cc, callOpts...)
		if err == nil || attempt == maxAttempts-1 {
			return err
		}
		if again, err := c.learnFloor(ctx, host, err, trailer); !again {
			return err
		}
	}
}

// unaryDate is the date of a unary call to fullMethod at host whose request
// bytes have SHA-256 sum: the key's DateSource keeps identical requests
// apart, waiting when a burst of them runs too far ahead of the clock.
func (c *client) unaryDate(ctx context.Context, host, fullMethod string, sum [sha256.Size]byte) (time.Time, error) {
	now := c.now()
	f := c.floors.get(host, now)
	date, wait := c.dates.Next(host+" "+httpsig.RequestTarget(method, fullMethod), httpsig.DigestOfSum(sum), f.clock(now))
	if err := sleep(ctx, max(wait, f.wait(date, now))); err != nil {
		return time.Time{}, status.FromContextError(err).Err()
	}
	return date, nil
}

// stream signs a stream over a fresh nonce: its digest differs from every
// other stream's, so the current date is enough to keep signatures
// distinct and the DateSource is not consulted.
//
// The endpoint answers with its response headers as soon as it accepts the
// signature (see the package documentation), and the stream is returned
// only then: a refusal is the error of the stream's opening, before the
// caller sends anything. A stream refused for its date alone is opened
// again (see unary) with a date the endpoint said it accepts.
func (c *client) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, fullMethod string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	host, err := c.hostOf(cc)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing stream %s: %v", fullMethod, err)
	}
	for attempt := 0; ; attempt++ {
		cs, trailer, err := c.openStream(ctx, desc, cc, fullMethod, host, streamer, opts)
		if err == nil || attempt == maxAttempts-1 {
			return cs, err
		}
		if again, err := c.learnFloor(ctx, host, err, trailer); !again {
			return nil, err
		}
	}
}

// openStream opens a signed stream and waits for the endpoint to accept
// it. A refused stream returns the endpoint's error and trailer.
func (c *client) openStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, fullMethod, host string, streamer grpc.Streamer, opts []grpc.CallOption) (grpc.ClientStream, metadata.MD, error) {
	nonce := newNonce()
	now := c.now()
	md, sig, err := c.signCall(ctx, fullMethod, host, c.floors.get(host, now).clock(now), sha256.Sum256(nonce))
	if err != nil {
		return nil, nil, err
	}
	md.Set(mdStreamNonce, base64.StdEncoding.EncodeToString(nonce))
	ctx = metadata.NewOutgoingContext(ctx, md)
	cs, err := streamer(ctx, desc, cc, fullMethod, append(opts[:len(opts):len(opts)], grpc.CallAuthority(host))...)
	if err != nil {
		return nil, nil, err
	}
	// Header blocks until the endpoint accepts (headers) or refuses (the
	// stream ends without them: its status is RecvMsg's error).
	if hdr, err := cs.Header(); err != nil {
		return nil, nil, err
	} else if hdr == nil {
		err := cs.RecvMsg(new(emptypb.Empty))
		if err == nil || err == io.EOF {
			err = status.Errorf(codes.Internal, "stream %s to %s ended before the endpoint accepted its signature", fullMethod, host)
		}
		return nil, cs.Trailer(), err
	}
	return &signedClientStream{ClientStream: cs, ctx: ctx, c: c, chain: firstChain(sig)}, nil, nil
}

// learnFloor reads, from the trailer of a call refused (with err) for its
// date alone, the dates the endpoint at host accepts, and remembers them
// for the calls to host that follow. It waits if the endpoint accepts no
// date yet (for an instant after it starts). It reports whether to sign
// again, and otherwise the error to return: err, or the context's if it
// ended while waiting.
func (c *client) learnFloor(ctx context.Context, host string, err error, trailer metadata.MD) (bool, error) {
	if status.Code(err) != codes.Unauthenticated {
		return false, err
	}
	earliest, latest, ok := acceptedDates(trailer)
	if !ok {
		return false, err
	}
	wait := earliest.Sub(latest)
	if wait > maxFloorWait {
		return false, err
	}
	now := c.now()
	c.floors.raise(host, floor{earliest: earliest, ahead: latest.Sub(now)}, now)
	if serr := sleep(ctx, wait); serr != nil {
		return false, status.FromContextError(serr).Err()
	}
	return true, nil
}

// acceptedDates parses the trailer of a refusal for a date.
func acceptedDates(trailer metadata.MD) (earliest, latest time.Time, ok bool) {
	e, l := trailer.Get(mdEarliestDate), trailer.Get(mdLatestDate)
	if len(e) != 1 || len(l) != 1 {
		return time.Time{}, time.Time{}, false
	}
	earliest, err1 := httpsig.ParseDate(e[0])
	latest, err2 := httpsig.ParseDate(l[0])
	return earliest, latest, err1 == nil && err2 == nil
}

// targetHost is the host:port a ClientConn's target names, as gRPC makes
// its :authority: "passthrough:///203.0.113.3:7450" and "203.0.113.3:7450"
// give 203.0.113.3:7450.
func targetHost(target string) (string, error) {
	host := target
	if u, err := url.Parse(target); err == nil && u.Scheme != "" {
		host = u.Opaque
		if host == "" {
			host = strings.TrimPrefix(u.Path, "/")
		}
	}
	if _, _, err := net.SplitHostPort(host); err != nil {
		return "", fmt.Errorf("the target %q names no host:port to sign: %w", target, err)
	}
	return host, nil
}

// newNonce returns nonceSize random bytes (crypto/rand.Read does not fail:
// it crashes the program if the system's generator does).
func newNonce() []byte {
	nonce := make([]byte, nonceSize)
	_, _ = rand.Read(nonce)
	return nonce
}

// signCall signs a call to fullMethod at host dated date whose digest
// covers bytes with SHA-256 sum, and returns a copy of ctx's outgoing
// metadata with date, digest and signature set, and the raw signature. The
// caller sends host as the call's :authority.
func (c *client) signCall(ctx context.Context, fullMethod, host string, date time.Time, sum [sha256.Size]byte) (metadata.MD, []byte, error) {
	var sig []byte
	h, err := httpsig.Sign(c.keyID, method, fullMethod, host, date, sum, func(data []byte) ([]byte, error) {
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

// floors remembers, per endpoint host:port, the earliest date the endpoint
// said it accepts, until the clock passes it: the calls that follow a
// refusal for a date are dated so at once. There is one per process
// (processFloors): the floor is the endpoint's, whoever calls it.
type floors struct {
	n  atomic.Int32 // len(m), read without the lock
	mu sync.RWMutex
	m  map[string]floor
}

// floor is what an endpoint said of the dates it accepts: from earliest
// on, and up to ahead past the client's clock (its clock plus its skew,
// seen from here). The zero floor says nothing.
type floor struct {
	earliest time.Time
	ahead    time.Duration
}

// clock is the date to sign with at now: now, or earliest if later.
func (f floor) clock(now time.Time) time.Time {
	if f.earliest.After(now) {
		return f.earliest
	}
	return now
}

// wait is how long to wait before sending a call dated date at now: dates
// run ahead of earliest when identical calls follow each other (see
// httpsig.DateSource), and the endpoint accepts none beyond ahead.
func (f floor) wait(date, now time.Time) time.Duration {
	if f.earliest.IsZero() {
		return 0
	}
	return max(date.Sub(now.Add(f.ahead)), 0)
}

// maxFloors bounds the endpoints remembered. A floor lives until its
// earliest date passes, up to the endpoints' skew window (5 minutes) after
// an endpoint started: the registrar calls back every joining node's
// reeve, freshly started, so a floor per node joining within that window.
// With 4,096, the 4,097th node of a mass join found no room, its retry
// went out undated by the floor and was refused again, and no node
// registered any more (fabric-scale at 10,000 nodes).
const maxFloors = 1 << 16

var processFloors = newFloors()

func newFloors() *floors { return &floors{m: make(map[string]floor)} }

// get is host's floor at now; the zero floor once now passes it.
func (f *floors) get(host string, now time.Time) floor {
	if f.n.Load() == 0 {
		return floor{}
	}
	f.mu.RLock()
	fl, ok := f.m[host]
	f.mu.RUnlock()
	if !ok {
		return floor{}
	}
	if !fl.earliest.After(now) {
		f.mu.Lock()
		if cur, ok := f.m[host]; ok && !cur.earliest.After(now) {
			f.delete(host)
		}
		f.mu.Unlock()
		return floor{}
	}
	return fl
}

// raise records host's floor, unless a later one is known.
func (f *floors) raise(host string, fl floor, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.m[host]; ok && !fl.earliest.After(cur.earliest) {
		return
	}
	if len(f.m) >= maxFloors {
		for h, e := range f.m {
			if !e.earliest.After(now) {
				f.delete(h)
			}
		}
		for h := range f.m {
			if len(f.m) < maxFloors {
				break
			}
			f.delete(h) // any: its next call is refused once, and learns it again
		}
	}
	f.m[host] = fl
	f.n.Store(int32(len(f.m)))
}

func (f *floors) delete(host string) {
	delete(f.m, host)
	f.n.Store(int32(len(f.m)))
}
