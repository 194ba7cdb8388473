package httpsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// FuzzParseSignature: any header parses or is refused with
// ErrMalformedSignature; what parses prints back to a header that parses
// to the same parameters.
func FuzzParseSignature(f *testing.F) {
	for _, s := range []string{
		`keyId="pastiche@h7",algorithm="ed25519",headers="(request-target) host date digest",signature="` + goodSig + `"`,
		`signature="` + goodSig + `",headers="(request-target) host date digest",algorithm="ed25519",keyId="reeve@n1"`,
		`keyId="a",algorithm="b",headers="c",signature="AA=="`,
		`keyId="a",keyId="a"`,
		`keyId="a",algorithm="b",headers="c  d",signature="AA=="`,
		`keyId="a,b",algorithm="b",headers="c",signature="AA=="`,
		`keyId="a", algorithm="b"`,
		`keyId="\"",algorithm="b",headers="c",signature="AA=="`,
		`keyId=a`,
		`=""`,
		"",
		",",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSignature(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedSignature) {
				t.Fatalf("ParseSignature(%q) = %v, not an ErrMalformedSignature", s, err)
			}
			return
		}
		if p.KeyID == "" || p.Algorithm == "" || len(p.Headers) == 0 || len(p.Signature) == 0 {
			t.Fatalf("ParseSignature(%q) accepted empty parameters: %+v", s, p)
		}
		if err := checkKeyID(p.KeyID); err != nil {
			t.Fatalf("ParseSignature(%q) accepted keyId %q: %v", s, p.KeyID, err)
		}
		again, err := ParseSignature(p.String())
		if err != nil {
			t.Fatalf("ParseSignature(%q) = %+v, whose String() %q does not parse: %v", s, p, p.String(), err)
		}
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("ParseSignature(String()) of %q (-first +again):\n%s", s, diff)
		}
	})
}

// verifySentinels are the errors Verify's refusals wrap.
var verifySentinels = []error{
	ErrMissingSignature, ErrMalformedSignature, ErrUnsupportedAlgorithm, ErrUnsupportedHeaders,
	ErrWrongHost, ErrMissingDate, ErrMalformedDate, ErrDateSkew, ErrMissingDigest, ErrMalformedDigest,
	ErrDigestMismatch, ErrUnknownKey, ErrNotWhitelisted, ErrBadSignature, ErrReplay,
	ErrTooOldForReplayCache, ErrBeforeStart,
}

// FuzzVerify: a request with any headers, method, path and body is
// accepted only if it is signed by a whitelisted key for this endpoint,
// inside the window, with the body's digest, and then only once; every
// refusal wraps one of the package's sentinels. With resign, the harness
// signs the fuzzed headers with a whitelisted key first, so that the
// accepting paths are explored too.
func FuzzVerify(f *testing.F) {
	body := []byte("a body")
	good := signedRequest(f, "pastiche@h7", testKey(1), testNow, body)
	add := func(r Request, body []byte, resign bool) {
		f.Add(r.Method, r.Path, r.Headers.Host, r.Headers.Date, r.Headers.Digest, r.Headers.Signature, body, resign)
	}
	add(good, body, false)
	add(good, body, true)
	add(good, []byte("another body"), false)
	other := signedRequestTo(f, otherHost, "pastiche@h7", testKey(1), testNow, body)
	add(other, body, false)
	add(signedRequest(f, "steward@h1", testKey(2), testNow, body), body, false)
	add(signedRequest(f, "nobody@h9", testKey(3), testNow, body), body, true)
	stale := signedRequest(f, "pastiche@h7", testKey(1), testNow.Add(-2*DefaultSkew), body)
	add(stale, body, true)
	add(Request{}, nil, false)
	f.Fuzz(func(t *testing.T, method, path, host, date, digest, signature string, body []byte, resign bool) {
		keys := newFakeKeys()
		v := NewVerifier(VerifierConfig{Host: testHost, Lookup: keys.Lookup, Now: func() time.Time { return testNow }, Start: testStart})
		r := Request{Method: method, Path: path, Headers: Headers{Host: host, Date: date, Digest: digest, Signature: signature}, BodySHA256: sha256.Sum256(body)}
		if resign {
			sig := ed25519.Sign(testKey(1), []byte(SigningString(RequestTarget(method, path), host, date, digest)))
			r.Headers.Signature = Params{KeyID: "pastiche@h7", Algorithm: Algorithm, Headers: strings.Split(SignedHeaders, " "), Signature: sig}.String()
		}
		got, err := v.Verify(r)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("Verify refused with %v, which wraps none of the sentinels", err)
			}
			return
		}
		p, perr := ParseSignature(r.Headers.Signature)
		switch {
		case perr != nil:
			t.Fatalf("Verify accepted a signature header that does not parse: %v", perr)
		case got.KeyID != "pastiche@h7" || p.KeyID != got.KeyID:
			t.Fatalf("Verify accepted keyId %q (header %q), not the whitelisted one", got.KeyID, p.KeyID)
		case host != testHost:
			t.Fatalf("Verify accepted a request for host %q, not %q", host, testHost)
		case digest != Digest(body):
			t.Fatalf("Verify accepted digest %q for a body whose digest is %q", digest, Digest(body))
		case !ed25519.Verify(testKey(1).Public().(ed25519.PublicKey), []byte(SigningString(RequestTarget(method, path), host, date, digest)), p.Signature):
			t.Fatal("Verify accepted a signature that does not verify")
		case got.Date.Sub(testNow) > DefaultSkew || testNow.Sub(got.Date) > DefaultSkew:
			t.Fatalf("Verify accepted date %s, outside the window around %s", got.Date, testNow)
		}
		if _, err := v.Verify(r); !errors.Is(err, ErrReplay) {
			t.Fatalf("the same request verified twice: second Verify = %v, want ErrReplay", err)
		}
	})
}

func isSentinel(err error) bool {
	for _, s := range verifySentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
