package httpsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultSkew is the default skew window: a request's date may be at most
// this far from the endpoint's clock, either way.
const DefaultSkew = 5 * time.Minute

// KeyLookup returns the public key of keyID if keyID may call this
// endpoint, else an error wrapping ErrUnknownKey or ErrNotWhitelisted. Its
// error message should not repeat keyID (Verify names it).
type KeyLookup func(keyID string) (ed25519.PublicKey, error)

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Host is this endpoint's host:port, as its clients address it (the
	// host header they sign). Requests signed for any other host are
	// refused (ErrWrongHost); empty refuses every request.
	Host string
	// Lookup finds the key of a keyId and says whether it may call this
	// endpoint. Nil refuses every key (ErrUnknownKey).
	Lookup KeyLookup
	// Skew is the accepted distance between a request's date and Now,
	// either way. Zero or negative means DefaultSkew.
	Skew time.Duration
	// Replay remembers accepted signatures. Nil means a new cache of
	// DefaultReplayCapacity.
	Replay *ReplayCache
	// Now is the endpoint's clock. Nil means time.Now.
	Now func() time.Time
	// Start is when the endpoint started remembering signatures: dates at
	// or before Start plus Skew are refused (ErrBeforeStart). Zero means
	// Now() when NewVerifier runs; never set it before Replay was made.
	Start time.Time
}

// Verifier checks signed requests for one endpoint. It is safe for
// concurrent use.
//
// A Verifier refuses signatures dated at or before the moment it was made
// plus the skew window (ErrBeforeStart): a signature an earlier process
// accepted, before a restart, was dated at most its acceptance plus the
// skew, and no replay cache of this process remembers it. Clients dating
// their calls with their clock are refused so for up to the skew window
// after the endpoint starts; the refusal (a *DateFloorError) tells them
// the dates it accepts, and signedrpc's clients sign again with one.
type Verifier struct {
	host   string
	lookup KeyLookup
	skew   time.Duration
	replay *ReplayCache
	now    func() time.Time
	start  int64 // dates <= start (unix seconds) are refused
}

// NewVerifier returns a Verifier with cfg's defaults filled in.
func NewVerifier(cfg VerifierConfig) *Verifier {
	v := &Verifier{host: cfg.Host, lookup: cfg.Lookup, skew: cfg.Skew, replay: cfg.Replay, now: cfg.Now}
	if v.lookup == nil {
		v.lookup = func(string) (ed25519.PublicKey, error) { return nil, ErrUnknownKey }
	}
	if v.skew <= 0 {
		v.skew = DefaultSkew
	}
	if v.replay == nil {
		v.replay = NewReplayCache(DefaultReplayCapacity)
	}
	if v.now == nil {
		v.now = time.Now
	}
	// A date d accepted at t, before the start, has d <= t+skew <
	// start+skew, so d <= the second of start+skew.
	start := cfg.Start
	if start.IsZero() {
		start = v.now()
	}
	v.start = start.Add(v.skew).Unix()
	return v
}

// Request is what an endpoint received: the method and path, the headers
// as received, and the SHA-256 of the body bytes as received.
type Request struct {
	Method     string // e.g. "POST"
	Path       string // e.g. "/pkg.Service/Method"
	Headers    Headers
	BodySHA256 [sha256.Size]byte
}

// Verified describes an accepted request.
type Verified struct {
	KeyID     string
	PubKey    ed25519.PublicKey
	Signature []byte // the raw signature
	Date      time.Time
}

// Verify accepts r or says why not, with an error wrapping one of the
// package's sentinel errors. An accepted signature is remembered: the same
// signature is refused (ErrReplay) as long as its date is inside the window.
func (v *Verifier) Verify(r Request) (Verified, error) {
	now := v.now()
	p, err := v.checkParams(r.Headers.Signature)
	if err != nil {
		return Verified{}, err
	}
	if err := v.checkHost(r.Headers.Host); err != nil {
		return Verified{}, err
	}
	date, err := v.checkDate(r.Headers.Date, now)
	if err != nil {
		return Verified{}, err
	}
	if err := checkDigest(r.Headers.Digest, r.BodySHA256); err != nil {
		return Verified{}, err
	}
	pub, err := v.publicKey(p.KeyID)
	if err != nil {
		return Verified{}, err
	}
	msg := SigningString(RequestTarget(r.Method, r.Path), r.Headers.Host, r.Headers.Date, r.Headers.Digest)
	if !ed25519.Verify(pub, []byte(msg), p.Signature) {
		return Verified{}, fmt.Errorf("%w: signature of keyId %q does not verify over %s", ErrBadSignature, p.KeyID, RequestTarget(r.Method, r.Path))
	}
	if err := v.remember(p.Signature, date, now); err != nil {
		return Verified{}, err
	}
	return Verified{KeyID: p.KeyID, PubKey: pub, Signature: p.Signature, Date: date}, nil
}

// checkHost refuses a request signed for another endpoint.
func (v *Verifier) checkHost(host string) error {
	switch {
	case v.host == "":
		return fmt.Errorf("%w: this endpoint has no host configured, so it accepts no signature", ErrWrongHost)
	case host == "":
		return fmt.Errorf("%w: the request names no host (want %s)", ErrWrongHost, v.host)
	case host != v.host:
		return fmt.Errorf("%w: it is addressed to %s, this endpoint is %s", ErrWrongHost, clip(host), v.host)
	}
	return nil
}

// remember refuses a date at or before the start floor or the replay
// cache's, and a replay, with a *DateFloorError that holds the dates
// accepted at now. A replay's earliest date is the second after its own:
// an honest client refused so signed the same request with the same key
// and date as an earlier process of its own did, and signing it again
// with a later date makes it another signature; a replaying attacker
// cannot sign.
func (v *Verifier) remember(sig []byte, date, now time.Time) error {
	var err error
	if d := date.Unix(); d <= v.start {
		err = &DateFloorError{
			Reason: fmt.Errorf("%w: dated %s, this endpoint accepts only signatures dated after %s (its start plus the skew of %s: it cannot know which earlier signatures it accepted before it started)",
				ErrBeforeStart, FormatDate(date), FormatDate(time.Unix(v.start, 0)), v.skew),
			Earliest: time.Unix(v.start+1, 0),
		}
	} else {
		err = v.replay.Remember(sig, date, now, v.skew)
		if errors.Is(err, ErrReplay) {
			err = &DateFloorError{Reason: err, Earliest: date.Add(time.Second)}
		}
	}
	var fe *DateFloorError
	if errors.As(err, &fe) {
		// The dates inside the window: [now-skew, now+skew], whole seconds.
		earliest := now.Add(-v.skew).Add(time.Second - 1).Truncate(time.Second)
		fe.Earliest = later(fe.Earliest, earliest)
		fe.Latest = now.Add(v.skew).Truncate(time.Second)
	}
	return err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// checkParams parses the signature header and checks algorithm, headers
// and signature length.
func (v *Verifier) checkParams(header string) (Params, error) {
	if header == "" {
		return Params{}, ErrMissingSignature
	}
	p, err := ParseSignature(header)
	if err != nil {
		return Params{}, err
	}
	if p.Algorithm != Algorithm {
		return Params{}, fmt.Errorf("%w: %q (only %q is accepted)", ErrUnsupportedAlgorithm, clip(p.Algorithm), Algorithm)
	}
	if !slices.Equal(p.Headers, strings.Split(SignedHeaders, " ")) {
		return Params{}, fmt.Errorf("%w: %q (only %q is accepted)", ErrUnsupportedHeaders, clip(strings.Join(p.Headers, " ")), SignedHeaders)
	}
	if len(p.Signature) != ed25519.SignatureSize {
		return Params{}, malformed("parameter %q is %d bytes, an ed25519 signature is %d", paramSignature, len(p.Signature), ed25519.SignatureSize)
	}
	return p, nil
}

// checkDate parses the date header and checks it is inside the window.
func (v *Verifier) checkDate(header string, now time.Time) (time.Time, error) {
	if header == "" {
		return time.Time{}, ErrMissingDate
	}
	date, err := ParseDate(header)
	if err != nil {
		return time.Time{}, err
	}
	off := date.Sub(now)
	switch {
	case off > v.skew:
		return time.Time{}, fmt.Errorf("%w: date %s is %s ahead of this endpoint's clock (%s), more than the allowed skew of %s",
			ErrDateSkew, header, off.Round(time.Second), FormatDate(now), v.skew)
	case off < -v.skew:
		return time.Time{}, fmt.Errorf("%w: date %s is %s behind this endpoint's clock (%s), more than the allowed skew of %s",
			ErrDateSkew, header, (-off).Round(time.Second), FormatDate(now), v.skew)
	}
	return date, nil
}

// checkDigest checks the digest header against the body's SHA-256.
func checkDigest(header string, bodySum [sha256.Size]byte) error {
	if header == "" {
		return ErrMissingDigest
	}
	b64, ok := strings.CutPrefix(header, DigestPrefix)
	if !ok {
		return fmt.Errorf("%w: %q does not start with %q", ErrMalformedDigest, clip(header), DigestPrefix)
	}
	// The decoder skips \r and \n even when strict: the length keeps the
	// one canonical spelling of a digest.
	sum, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(sum) != sha256.Size || len(b64) != base64.StdEncoding.EncodedLen(sha256.Size) {
		return fmt.Errorf("%w: %q is not the standard base64 of %d bytes", ErrMalformedDigest, clip(header), sha256.Size)
	}
	if subtle.ConstantTimeCompare(sum, bodySum[:]) != 1 {
		return fmt.Errorf("%w: header says %s, the body received has %s", ErrDigestMismatch, header, DigestOfSum(bodySum))
	}
	return nil
}

// publicKey looks keyID up, naming it in the error.
func (v *Verifier) publicKey(keyID string) (ed25519.PublicKey, error) {
	pub, err := v.lookup(keyID)
	switch {
	case errors.Is(err, ErrNotWhitelisted):
		return nil, keyRejection(keyID, "is not on the whitelist of this endpoint", ErrNotWhitelisted, err)
	case errors.Is(err, ErrUnknownKey):
		return nil, keyRejection(keyID, "is unknown", ErrUnknownKey, err)
	case err != nil:
		return nil, fmt.Errorf("looking up keyId %q: %w", keyID, err)
	case len(pub) != ed25519.PublicKeySize:
		return nil, fmt.Errorf("%w: keyId %q has a public key of %d bytes, not %d", ErrUnknownKey, keyID, len(pub), ed25519.PublicKeySize)
	}
	return pub, nil
}

// keyRejection reads `keyId "<keyID>" <what>`, followed by the lookup's own
// message when it adds anything to the sentinel's.
func keyRejection(keyID, what string, sentinel, lookupErr error) error {
	msg := fmt.Sprintf("keyId %q %s", keyID, what)
	if lookupErr != sentinel {
		msg += " (" + lookupErr.Error() + ")"
	}
	return &rejection{msg: msg, errs: []error{sentinel, lookupErr}}
}
