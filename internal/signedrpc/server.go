package signedrpc

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fabricmesh/fabric/internal/httpsig"
)

// Whitelist returns the public key of keyID if it may call this endpoint,
// else an error wrapping httpsig.ErrUnknownKey or httpsig.ErrNotWhitelisted.
type Whitelist interface {
	Lookup(keyID string) (ed25519.PublicKey, error)
}

// ServerConfig configures the verification of signed calls on a server.
type ServerConfig struct {
	// Host is the endpoint's host:port, as its clients dial it (its VPN IP
	// and port): calls signed for any other are refused. Empty refuses
	// every call.
	Host string
	// Whitelist gives the keys of the clients allowed to call this
	// endpoint. Nil refuses every call.
	Whitelist Whitelist
	// Skew is the accepted distance between a call's date and Now, either
	// way. Zero means httpsig.DefaultSkew.
	Skew time.Duration
	// Replay remembers accepted signatures. Nil means a new cache of
	// httpsig.DefaultReplayCapacity for this server.
	Replay *httpsig.ReplayCache
	// Now is the server's clock. Nil means time.Now.
	Now func() time.Time
	// Start is when the server started remembering signatures: calls
	// dated at or before Start plus Skew are refused, and their clients
	// sign again (see httpsig.Verifier). Zero means Now() when
	// ServerOptions runs; never set it before Replay was made.
	Start time.Time
	// MaxRequestBytes bounds a message the server receives (a unary
	// request, or one enveloped message of a stream). Zero means
	// DefaultMaxRequestBytes.
	MaxRequestBytes int
	// Logger receives one line per refused call. Nil discards.
	Logger *slog.Logger
}

// DefaultMaxRequestBytes is the default of ServerConfig.MaxRequestBytes.
const DefaultMaxRequestBytes = 256 << 10

// ServerOptions makes a server accept only signed calls from whitelisted
// clients: the server codec (scoped to this server) and the unary and
// stream server interceptors.
func ServerOptions(cfg ServerConfig) []grpc.ServerOption {
	s := &server{codec: newServerCodec(), log: cfg.Logger}
	var lookup httpsig.KeyLookup
	if cfg.Whitelist != nil {
		lookup = cfg.Whitelist.Lookup
	}
	s.verifier = httpsig.NewVerifier(httpsig.VerifierConfig{Host: cfg.Host, Lookup: lookup, Skew: cfg.Skew, Replay: cfg.Replay, Now: cfg.Now, Start: cfg.Start})
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	maxRequest := cfg.MaxRequestBytes
	if maxRequest <= 0 {
		maxRequest = DefaultMaxRequestBytes
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRequest),
		grpc.ForceServerCodecV2(s.codec),
		grpc.ChainUnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(s.stream),
	}
}

type callerKey struct{}

// Caller returns the key ID of the verified client of the call handled
// with ctx.
func Caller(ctx context.Context) (keyID string, ok bool) {
	keyID, ok = ctx.Value(callerKey{}).(string)
	return keyID, ok
}

type server struct {
	codec    *serverCodec
	verifier *httpsig.Verifier
	log      *slog.Logger
}

func (s *server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	sum, ok := s.codec.takeSum(req)
	if !ok {
		s.log.Error("signed call: no raw request bytes recorded; is the server built with signedrpc.ServerOptions first?", "method", info.FullMethod)
		return nil, status.Error(codes.Internal, "signature check failed: the request bytes were not recorded")
	}
	v, err := s.verifyCall(ctx, info.FullMethod, func(metadata.MD) ([sha256.Size]byte, error) { return sum, nil },
		func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) })
	if err != nil {
		return nil, err
	}
	return handler(context.WithValue(ctx, callerKey{}, v.KeyID), req)
}

// stream verifies a stream's signature, then sends the response headers at
// once: the client waits for them before it sends anything (handlers
// cannot set headers of their own; trailers they can).
func (s *server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	v, err := s.verifyCall(ss.Context(), info.FullMethod, streamNonceSum, ss.SetTrailer)
	if err != nil {
		return err
	}
	if err := ss.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	w := &signedServerStream{
		ServerStream: ss,
		ctx:          context.WithValue(ss.Context(), callerKey{}, v.KeyID),
		s:            s,
		method:       info.FullMethod,
		keyID:        v.KeyID,
		pub:          v.PubKey,
		chain:        firstChain(v.Signature),
	}
	err = handler(srv, w)
	if w.refused != nil {
		return w.refused
	}
	return err
}

// bodySumFunc returns the SHA-256 of what a call's digest covers: the
// request bytes received, or a stream's nonce (read from md).
type bodySumFunc func(md metadata.MD) ([sha256.Size]byte, error)

// Reasons a stream is refused before its signature is checked.
var (
	errNonceMissing   = errors.New("stream nonce missing")
	errNonceMalformed = errors.New("stream nonce malformed")
)

// streamNonceSum is the bodySumFunc of streams: the SHA-256 of the
// stream's nonce, which must appear once, as the padded standard base64 of
// nonceSize bytes, in canonical form (no line breaks, zero padding bits).
func streamNonceSum(md metadata.MD) ([sha256.Size]byte, error) {
	vals := md.Get(mdStreamNonce)
	switch {
	case len(vals) == 0:
		return [sha256.Size]byte{}, fmt.Errorf("%w: the call has no %s metadata", errNonceMissing, mdStreamNonce)
	case len(vals) > 1:
		return [sha256.Size]byte{}, fmt.Errorf("%w: %d %s values", errNonceMalformed, len(vals), mdStreamNonce)
	}
	nonce, err := base64.StdEncoding.DecodeString(vals[0])
	if err != nil || len(nonce) != nonceSize || base64.StdEncoding.EncodeToString(nonce) != vals[0] {
		return [sha256.Size]byte{}, fmt.Errorf("%w: %s is not the padded standard base64 of %d bytes (%d characters)",
			errNonceMalformed, mdStreamNonce, nonceSize, len(vals[0]))
	}
	return sha256.Sum256(nonce), nil
}

// verifyCall checks the signature of a call to fullMethod, whose digest
// must cover the bytes bodySum digests, and returns a status error if it
// is refused. A call that signed again with another date would not be
// refused gets, in its trailer, the dates this endpoint accepts (set with
// setTrailer); one dated before the server's start is logged at info
// level: after a restart, every client's first call is.
func (s *server) verifyCall(ctx context.Context, fullMethod string, bodySum bodySumFunc, setTrailer func(metadata.MD)) (httpsig.Verified, error) {
	v, err := s.check(ctx, fullMethod, bodySum)
	if err == nil {
		return v, nil
	}
	st := refusal(err)
	var fe *httpsig.DateFloorError
	if errors.As(err, &fe) {
		setTrailer(metadata.Pairs(mdEarliestDate, httpsig.FormatDate(fe.Earliest), mdLatestDate, httpsig.FormatDate(fe.Latest)))
	}
	if errors.Is(err, httpsig.ErrBeforeStart) {
		s.log.Info("signed call refused for its date; the client may sign again", "method", fullMethod, "peer", peerAddr(ctx), "err", err)
	} else {
		s.log.Warn("signed call refused", "method", fullMethod, "peer", peerAddr(ctx), "code", st.Code(), "err", err)
	}
	return httpsig.Verified{}, st.Err()
}

// check reads the headers, then what the digest covers, and verifies.
// A call without a signature is refused as unsigned, whatever else it
// lacks.
func (s *server) check(ctx context.Context, fullMethod string, bodySum bodySumFunc) (httpsig.Verified, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h, err := headersFrom(md)
	if err != nil {
		return httpsig.Verified{}, err
	}
	if h.Signature == "" {
		return httpsig.Verified{}, httpsig.ErrMissingSignature
	}
	sum, err := bodySum(md)
	if err != nil {
		return httpsig.Verified{}, err
	}
	return s.verifier.Verify(httpsig.Request{Method: method, Path: fullMethod, Headers: h, BodySHA256: sum})
}

// headersFrom reads the headers from the call's metadata; each may appear
// at most once. The host is the call's :authority (HTTP/2's Host).
func headersFrom(md metadata.MD) (httpsig.Headers, error) {
	var h httpsig.Headers
	for _, f := range []struct {
		key string
		dst *string
		err error
	}{
		{mdAuthority, &h.Host, httpsig.ErrWrongHost},
		{mdDate, &h.Date, httpsig.ErrMalformedDate},
		{mdDigest, &h.Digest, httpsig.ErrMalformedDigest},
		{mdSignature, &h.Signature, httpsig.ErrMalformedSignature},
	} {
		vals := md.Get(f.key)
		if len(vals) > 1 {
			return httpsig.Headers{}, fmt.Errorf("%w: %d %s values", f.err, len(vals), f.key)
		}
		if len(vals) == 1 {
			*f.dst = vals[0]
		}
	}
	return h, nil
}

// refusal maps a verification error to a status: PermissionDenied for a
// key not on the whitelist, Unauthenticated for every other refusal,
// Internal when the check itself failed (the whitelist lookup broke).
func refusal(err error) *status.Status {
	switch {
	case errors.Is(err, httpsig.ErrNotWhitelisted):
		return status.New(codes.PermissionDenied, "signature rejected: "+err.Error())
	case isRefusal(err):
		return status.New(codes.Unauthenticated, "signature rejected: "+err.Error())
	}
	return status.New(codes.Internal, "signature check failed: "+err.Error())
}

func isRefusal(err error) bool {
	for _, sentinel := range []error{
		httpsig.ErrMissingSignature, httpsig.ErrMalformedSignature, httpsig.ErrUnsupportedAlgorithm,
		httpsig.ErrUnsupportedHeaders, httpsig.ErrWrongHost, httpsig.ErrMissingDate, httpsig.ErrMalformedDate, httpsig.ErrDateSkew,
		httpsig.ErrMissingDigest, httpsig.ErrMalformedDigest, httpsig.ErrDigestMismatch, httpsig.ErrUnknownKey,
		httpsig.ErrBadSignature, httpsig.ErrReplay, httpsig.ErrTooOldForReplayCache, httpsig.ErrBeforeStart,
		errNonceMissing, errNonceMalformed,
	} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
