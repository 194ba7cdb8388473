package httpsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	testNow = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	// testStart is when the tests' verifiers started: long enough before
	// testNow that the start floor is out of the way.
	testStart = testNow.Add(-time.Hour)
)

const (
	testPath = "/fabric.test.v1.Echo/Echo"
	// testHost is the endpoint of the tests' verifiers, otherHost another.
	testHost  = "203.0.113.3:7450"
	otherHost = "203.0.113.5:7450"
)

// testKey derives a deterministic key pair from seed.
func testKey(seed byte) ed25519.PrivateKey {
	seedBytes := sha256.Sum256([]byte{seed})
	return ed25519.NewKeyFromSeed(seedBytes[:])
}

// fakeKeys is a hand-written key lookup: known keys, and the subset
// whitelisted for the endpoint.
type fakeKeys struct {
	keys        map[string]ed25519.PublicKey
	whitelisted map[string]bool
	err         error // returned for every lookup when set
}

func (f *fakeKeys) Lookup(keyID string) (ed25519.PublicKey, error) {
	if f.err != nil {
		return nil, f.err
	}
	pub, ok := f.keys[keyID]
	if !ok {
		return nil, ErrUnknownKey
	}
	if !f.whitelisted[keyID] {
		return nil, ErrNotWhitelisted
	}
	return pub, nil
}

func newFakeKeys() *fakeKeys {
	return &fakeKeys{
		keys: map[string]ed25519.PublicKey{
			"pastiche@h7": testKey(1).Public().(ed25519.PublicKey),
			"steward@h1":  testKey(2).Public().(ed25519.PublicKey),
		},
		whitelisted: map[string]bool{"pastiche@h7": true},
	}
}

// signedRequest is a request to testHost signed as keyID with key at date
// with body.
func signedRequest(tb testing.TB, keyID string, key ed25519.PrivateKey, date time.Time, body []byte) Request {
	tb.Helper()
	return signedRequestTo(tb, testHost, keyID, key, date, body)
}

// signedRequestTo is a request to host.
func signedRequestTo(tb testing.TB, host, keyID string, key ed25519.PrivateKey, date time.Time, body []byte) Request {
	tb.Helper()
	h, err := Sign(keyID, "POST", testPath, host, date, sha256.Sum256(body), func(data []byte) ([]byte, error) {
		return ed25519.Sign(key, data), nil
	})
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return Request{Method: "POST", Path: testPath, Headers: h, BodySHA256: sha256.Sum256(body)}
}

// withParam replaces one parameter of r's signature header.
func withParam(tb testing.TB, r Request, edit func(*Params)) Request {
	tb.Helper()
	p, err := ParseSignature(r.Headers.Signature)
	if err != nil {
		tb.Fatalf("ParseSignature: %v", err)
	}
	edit(&p)
	r.Headers.Signature = p.String()
	return r
}

func TestVerify(t *testing.T) {
	body := []byte("hello")
	good := func(tb testing.TB) Request { return signedRequest(tb, "pastiche@h7", testKey(1), testNow, body) }
	tests := []struct {
		name     string
		req      func(testing.TB) Request
		keys     func(*fakeKeys)
		cfg      func(*VerifierConfig)
		wantErr  error
		wantText string
	}{
		{name: "ok", req: good},
		{name: "ok at the edge of the window, ahead", req: func(tb testing.TB) Request {
			return signedRequest(tb, "pastiche@h7", testKey(1), testNow.Add(DefaultSkew), body)
		}},
		{name: "ok at the edge of the window, behind", req: func(tb testing.TB) Request {
			return signedRequest(tb, "pastiche@h7", testKey(1), testNow.Add(-DefaultSkew), body)
		}},
		{name: "missing signature", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Signature = ""
			return r
		}, wantErr: ErrMissingSignature, wantText: "missing signature"},
		{name: "malformed signature", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Signature = strings.Replace(r.Headers.Signature, `keyId=`, `keyid=`, 1)
			return r
		}, wantErr: ErrMalformedSignature, wantText: `unknown parameter "keyid"`},
		{name: "short signature", req: func(tb testing.TB) Request {
			return withParam(tb, good(tb), func(p *Params) { p.Signature = p.Signature[:63] })
		}, wantErr: ErrMalformedSignature, wantText: `parameter "signature" is 63 bytes`},
		{name: "unsupported algorithm", req: func(tb testing.TB) Request {
			return withParam(tb, good(tb), func(p *Params) { p.Algorithm = "hs2019" })
		}, wantErr: ErrUnsupportedAlgorithm, wantText: `"hs2019" (only "ed25519" is accepted)`},
		{name: "unsupported headers", req: func(tb testing.TB) Request {
			return withParam(tb, good(tb), func(p *Params) { p.Headers = []string{"date"} })
		}, wantErr: ErrUnsupportedHeaders, wantText: `"date" (only "(request-target) host date digest" is accepted)`},
		{name: "headers in another order", req: func(tb testing.TB) Request {
			return withParam(tb, good(tb), func(p *Params) { p.Headers = []string{"date", "(request-target)", "host", "digest"} })
		}, wantErr: ErrUnsupportedHeaders},
		{name: "headers without host", req: func(tb testing.TB) Request {
			return withParam(tb, good(tb), func(p *Params) { p.Headers = []string{"(request-target)", "date", "digest"} })
		}, wantErr: ErrUnsupportedHeaders, wantText: `"(request-target) date digest" (only "(request-target) host date digest" is accepted)`},
		{name: "signed for another endpoint", req: func(tb testing.TB) Request {
			return signedRequestTo(tb, otherHost, "pastiche@h7", testKey(1), testNow, body)
		}, wantErr: ErrWrongHost, wantText: "signed for another endpoint: it is addressed to 203.0.113.5:7450, this endpoint is 203.0.113.3:7450"},
		{name: "signed for another endpoint, host rewritten", req: func(tb testing.TB) Request {
			r := signedRequestTo(tb, otherHost, "pastiche@h7", testKey(1), testNow, body)
			r.Headers.Host = testHost
			return r
		}, wantErr: ErrBadSignature},
		{name: "no host", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Host = ""
			return r
		}, wantErr: ErrWrongHost, wantText: "the request names no host (want 203.0.113.3:7450)"},
		{name: "endpoint without a host", req: good, cfg: func(c *VerifierConfig) { c.Host = "" },
			wantErr: ErrWrongHost, wantText: "this endpoint has no host configured"},
		{name: "missing date", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Date = ""
			return r
		}, wantErr: ErrMissingDate},
		{name: "malformed date", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Date = testNow.Format(time.RFC3339)
			return r
		}, wantErr: ErrMalformedDate, wantText: `"2026-05-04T12:00:00Z" is not an IMF-fixdate`},
		{name: "date ahead", req: func(tb testing.TB) Request {
			return signedRequest(tb, "pastiche@h7", testKey(1), testNow.Add(7*time.Minute+3*time.Second), body)
		}, wantErr: ErrDateSkew, wantText: "is 7m3s ahead of this endpoint's clock (Mon, 04 May 2026 12:00:00 GMT), more than the allowed skew of 5m0s"},
		{name: "date behind", req: func(tb testing.TB) Request {
			return signedRequest(tb, "pastiche@h7", testKey(1), testNow.Add(-DefaultSkew-time.Second), body)
		}, wantErr: ErrDateSkew, wantText: "is 5m1s behind"},
		{name: "missing digest", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Digest = ""
			return r
		}, wantErr: ErrMissingDigest},
		{name: "digest of another algorithm", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Digest = "SHA-512=" + strings.TrimPrefix(r.Headers.Digest, DigestPrefix)
			return r
		}, wantErr: ErrMalformedDigest, wantText: `does not start with "SHA-256="`},
		{name: "digest not base64", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Digest = "SHA-256=abc"
			return r
		}, wantErr: ErrMalformedDigest, wantText: "is not the standard base64 of 32 bytes"},
		{name: "digest with a CR inside its base64 (found by FuzzVerify)", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Digest = r.Headers.Digest[:20] + "\r" + r.Headers.Digest[20:]
			return r
		}, wantErr: ErrMalformedDigest, wantText: "is not the standard base64 of 32 bytes"},
		{name: "digest mismatch", req: func(tb testing.TB) Request {
			r := good(tb)
			r.BodySHA256 = sha256.Sum256([]byte("HELLO"))
			return r
		}, wantErr: ErrDigestMismatch, wantText: "header says SHA-256=LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=, the body received has"},
		{name: "digest header of another body, signed", req: func(tb testing.TB) Request {
			r := signedRequest(tb, "pastiche@h7", testKey(1), testNow, []byte("HELLO"))
			r.BodySHA256 = sha256.Sum256(body)
			return r
		}, wantErr: ErrDigestMismatch},
		{name: "unknown key", req: func(tb testing.TB) Request {
			return signedRequest(tb, "nobody@h9", testKey(9), testNow, body)
		}, wantErr: ErrUnknownKey, wantText: `keyId "nobody@h9" is unknown`},
		{name: "not whitelisted", req: func(tb testing.TB) Request {
			return signedRequest(tb, "steward@h1", testKey(2), testNow, body)
		}, wantErr: ErrNotWhitelisted, wantText: `keyId "steward@h1" is not on the whitelist of this endpoint`},
		{name: "lookup explains", req: good, keys: func(f *fakeKeys) {
			f.err = fmt.Errorf("whitelist of pastiche@h3 has 2 clients: %w", ErrNotWhitelisted)
		}, wantErr: ErrNotWhitelisted, wantText: `keyId "pastiche@h7" is not on the whitelist of this endpoint (whitelist of pastiche@h3 has 2 clients: `},
		{name: "lookup fails", req: good, keys: func(f *fakeKeys) {
			f.err = errors.New("reeve is away")
		}, wantText: `looking up keyId "pastiche@h7": reeve is away`},
		{name: "wrong key", req: func(tb testing.TB) Request {
			return signedRequest(tb, "pastiche@h7", testKey(2), testNow, body)
		}, wantErr: ErrBadSignature, wantText: `signature of keyId "pastiche@h7" does not verify over post /fabric.test.v1.Echo/Echo`},
		{name: "other method", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Path = "/fabric.test.v1.Echo/Upload"
			return r
		}, wantErr: ErrBadSignature},
		{name: "other date", req: func(tb testing.TB) Request {
			r := good(tb)
			r.Headers.Date = FormatDate(testNow.Add(time.Second))
			return r
		}, wantErr: ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := newFakeKeys()
			if tt.keys != nil {
				tt.keys(keys)
			}
			cfg := VerifierConfig{Host: testHost, Start: testStart, Lookup: keys.Lookup, Now: func() time.Time { return testNow }}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			v := NewVerifier(cfg)
			r := tt.req(t)
			got, err := v.Verify(r)
			checkErr(t, err, tt.wantErr, tt.wantText)
			if err == nil && got.KeyID != "pastiche@h7" {
				t.Errorf("Verify().KeyID = %q, want pastiche@h7", got.KeyID)
			}
		})
	}
}

// checkErr checks err against a sentinel (nil: any error) and a substring
// (empty with a nil sentinel: no error).
func checkErr(tb testing.TB, err, want error, wantText string) {
	tb.Helper()
	if want == nil && wantText == "" {
		if err != nil {
			tb.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if err == nil {
		tb.Fatalf("err = nil, want %v", want)
	}
	if want != nil && !errors.Is(err, want) {
		tb.Errorf("err = %v, want errors.Is %v", err, want)
	}
	if !strings.Contains(err.Error(), wantText) {
		tb.Errorf("err = %q, want it to contain %q", err, wantText)
	}
}

func TestVerifyReplay(t *testing.T) {
	now := testNow
	v := NewVerifier(VerifierConfig{Host: testHost, Start: testStart, Lookup: newFakeKeys().Lookup, Now: func() time.Time { return now }})
	r := signedRequest(t, "pastiche@h7", testKey(1), testNow, []byte("once"))
	if _, err := v.Verify(r); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	now = testNow.Add(DefaultSkew) // still inside the window
	_, err := v.Verify(r)
	checkErr(t, err, ErrReplay, "this signature, dated Mon, 04 May 2026 12:00:00 GMT, was already accepted")
	// Signed again a second later, it would be another signature.
	var fe *DateFloorError
	if !errors.As(err, &fe) || !fe.Earliest.Equal(testNow.Add(time.Second)) || !fe.Latest.Equal(now.Add(DefaultSkew)) {
		t.Errorf("replay refusal %#v, want a *DateFloorError from %v to %v", err, testNow.Add(time.Second), now.Add(DefaultSkew))
	}

	// A refused request is not remembered: the same signature with a
	// mangled digest does not make the good one a replay.
	v2 := NewVerifier(VerifierConfig{Host: testHost, Start: testStart, Lookup: newFakeKeys().Lookup, Now: func() time.Time { return testNow }})
	bad := r
	bad.BodySHA256[0] ^= 1
	if _, err := v2.Verify(bad); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Verify(tampered) = %v, want ErrDigestMismatch", err)
	}
	if _, err := v2.Verify(r); err != nil {
		t.Errorf("Verify(good) after a refused tampered copy: %v", err)
	}
}

func TestVerifyAcceptedFields(t *testing.T) {
	v := NewVerifier(VerifierConfig{Host: testHost, Start: testStart, Lookup: newFakeKeys().Lookup, Now: func() time.Time { return testNow }})
	r := signedRequest(t, "pastiche@h7", testKey(1), testNow, nil)
	got, err := v.Verify(r)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	p, _ := ParseSignature(r.Headers.Signature)
	want := Verified{KeyID: "pastiche@h7", PubKey: testKey(1).Public().(ed25519.PublicKey), Signature: p.Signature, Date: testNow}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Verify (-want +got):\n%s", diff)
	}
}

func TestSignRejectsBadKeyID(t *testing.T) {
	_, err := Sign("a,b", "POST", testPath, testHost, testNow, sha256.Sum256(nil), func([]byte) ([]byte, error) {
		t.Fatal("sign called")
		return nil, nil
	})
	if err == nil || !strings.Contains(err.Error(), "keyId holds") {
		t.Errorf("Sign(keyId a,b) = %v, want a keyId error", err)
	}
}

func TestSignPassesSignerError(t *testing.T) {
	boom := errors.New("agent unreachable")
	_, err := Sign("a", "POST", testPath, testHost, testNow, sha256.Sum256(nil), func([]byte) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Errorf("Sign = %v, want the signer's error", err)
	}
}

func TestSignRejectsBadHost(t *testing.T) {
	for _, host := range []string{"", "a b", "h\n", strings.Repeat("h", MaxHostLen+1)} {
		_, err := Sign("a", "POST", testPath, host, testNow, sha256.Sum256(nil), func([]byte) ([]byte, error) {
			t.Fatal("sign called")
			return nil, nil
		})
		if err == nil || !strings.Contains(err.Error(), "host") {
			t.Errorf("Sign(host %q) = %v, want a host error", host, err)
		}
	}
}

// TestVerifyStartFloor: a verifier refuses what a previous process could
// have accepted, and says which dates it accepts instead.
func TestVerifyStartFloor(t *testing.T) {
	start := testNow
	now := start
	v := NewVerifier(VerifierConfig{Host: testHost, Lookup: newFakeKeys().Lookup, Now: func() time.Time { return now }})
	floor := start.Add(DefaultSkew)
	tests := []struct {
		name                   string
		at, date               time.Time
		wantErr                error
		wantEarliest, wantLate time.Time
	}{
		{name: "dated at the start", at: start, date: start, wantErr: ErrBeforeStart,
			// The instant after the start: nothing is accepted yet.
			wantEarliest: floor.Add(time.Second), wantLate: floor},
		{name: "dated at the floor", at: start.Add(3 * time.Second), date: floor, wantErr: ErrBeforeStart,
			wantEarliest: floor.Add(time.Second), wantLate: floor.Add(3 * time.Second)},
		{name: "dated after the floor", at: start.Add(3 * time.Second), date: floor.Add(time.Second)},
		{name: "later, dated with the clock", at: floor.Add(2 * time.Second), date: floor.Add(2 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = tt.at
			_, err := v.Verify(signedRequest(t, "pastiche@h7", testKey(1), tt.date, []byte(tt.name)))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			checkErr(t, err, tt.wantErr, "this endpoint accepts only signatures dated after "+FormatDate(floor))
			var fe *DateFloorError
			if !errors.As(err, &fe) {
				t.Fatalf("Verify = %v, not a *DateFloorError", err)
			}
			if !fe.Earliest.Equal(tt.wantEarliest) || !fe.Latest.Equal(tt.wantLate) {
				t.Errorf("accepted dates [%v, %v], want [%v, %v]", fe.Earliest, fe.Latest, tt.wantEarliest, tt.wantLate)
			}
		})
	}
}

// TestVerifyCacheFloorDates: a refusal by the replay cache's floor says
// which dates are accepted too.
func TestVerifyCacheFloorDates(t *testing.T) {
	c := NewReplayCache(1)
	v := NewVerifier(VerifierConfig{Host: testHost, Start: testStart, Lookup: newFakeKeys().Lookup, Replay: c, Now: func() time.Time { return testNow }})
	for i := range 2 { // the second evicts the first and raises the floor to its date
		if _, err := v.Verify(signedRequest(t, "pastiche@h7", testKey(1), testNow.Add(time.Duration(i)*time.Second), []byte{byte(i)})); err != nil {
			t.Fatalf("Verify %d: %v", i, err)
		}
	}
	_, err := v.Verify(signedRequest(t, "pastiche@h7", testKey(1), testNow, []byte("late")))
	var fe *DateFloorError
	if !errors.Is(err, ErrTooOldForReplayCache) || !errors.As(err, &fe) {
		t.Fatalf("Verify = %v, want a *DateFloorError of ErrTooOldForReplayCache", err)
	}
	if want := testNow.Add(time.Second); !fe.Earliest.Equal(want) || !fe.Latest.Equal(testNow.Add(DefaultSkew)) {
		t.Errorf("accepted dates [%v, %v], want [%v, %v]", fe.Earliest, fe.Latest, want, testNow.Add(DefaultSkew))
	}
}
