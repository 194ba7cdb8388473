package httpsig

import (
	"errors"
	"time"
)

// Sentinel errors of Verifier.Verify, one per reason a request is refused.
// Verify wraps them with details; test with errors.Is.
var (
	// ErrMissingSignature: the request carries no signature header.
	ErrMissingSignature = errors.New("missing signature")
	// ErrMalformedSignature: the signature header does not parse.
	ErrMalformedSignature = errors.New("malformed signature")
	// ErrUnsupportedAlgorithm: algorithm is not "ed25519".
	ErrUnsupportedAlgorithm = errors.New("unsupported signature algorithm")
	// ErrUnsupportedHeaders: headers is not "(request-target) date digest".
	ErrUnsupportedHeaders = errors.New("unsupported signed headers list")
	// ErrWrongHost: the request is signed for another endpoint (its host
	// header names another host:port), or carries no host header.
	ErrWrongHost = errors.New("signed for another endpoint")
	// ErrMissingDate: the request carries no date header.
	ErrMissingDate = errors.New("missing date")
	// ErrMalformedDate: the date header is not an RFC 7231 IMF-fixdate.
	ErrMalformedDate = errors.New("malformed date")
	// ErrDateSkew: the date is outside the skew window around the
	// endpoint's clock.
	ErrDateSkew = errors.New("date outside the skew window")
	// ErrMissingDigest: the request carries no digest header.
	ErrMissingDigest = errors.New("missing digest")
	// ErrMalformedDigest: the digest header is not "SHA-256=<base64>".
	ErrMalformedDigest = errors.New("malformed digest")
	// ErrDigestMismatch: the digest header is not the digest of the body
	// actually received.
	ErrDigestMismatch = errors.New("digest does not match the body")
	// ErrUnknownKey: the keyId is not known. Key lookups return it
	// (possibly wrapped).
	ErrUnknownKey = errors.New("unknown keyId")
	// ErrNotWhitelisted: the keyId is known but may not call this
	// endpoint. Key lookups return it (possibly wrapped).
	ErrNotWhitelisted = errors.New("keyId not on the whitelist of this endpoint")
	// ErrBadSignature: the signature does not verify with the key of keyId.
	ErrBadSignature = errors.New("bad signature")
	// ErrReplay: the same signature was already accepted inside the window.
	ErrReplay = errors.New("replayed signature")
	// ErrTooOldForReplayCache: the signature is dated at or before the
	// replay cache's floor, so the cache can no longer tell whether it was
	// seen (it was full and forgot older signatures). Refused: fail closed.
	ErrTooOldForReplayCache = errors.New("signature too old for the replay cache")
	// ErrBeforeStart: the signature is dated at or before the moment the
	// Verifier was made plus its skew window. A signature accepted by an
	// earlier process (before a restart) is dated so, and no cache of this
	// process remembers it: refused. Fail closed.
	ErrBeforeStart = errors.New("signature dated before this endpoint's start")
)

// A DateFloorError refuses a signature that the same call signed again
// with another date would not be refused for: it is dated at or before a
// floor (ErrBeforeStart, ErrTooOldForReplayCache), or it was already
// accepted (ErrReplay: the same call signed by the same key with the same
// date; errors.Is matches the reason). It holds the dates the endpoint
// accepted when it refused: a client that signs the call again with a date
// in [Earliest, Latest] is not refused for its date. Earliest may be after
// Latest for an instant right after the endpoint started; the client then
// waits the difference.
type DateFloorError struct {
	Reason           error
	Earliest, Latest time.Time
}

func (e *DateFloorError) Error() string { return e.Reason.Error() }
func (e *DateFloorError) Unwrap() error { return e.Reason }

// rejection is an error with its own message that matches (errors.Is,
// errors.As) each of errs.
type rejection struct {
	msg  string
	errs []error
}

func (r *rejection) Error() string   { return r.msg }
func (r *rejection) Unwrap() []error { return r.errs }
