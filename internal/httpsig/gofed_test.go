package httpsig_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	gofed "github.com/go-fed/httpsig"

	"github.com/fabricmesh/fabric/internal/httpsig"
)

// These tests check the scheme against an independent implementation of
// the draft, github.com/go-fed/httpsig. The host header is the request's
// Host (r.Host, from the URL), as go-fed reads it.

const endpoint = "203.0.113.3:7450"

func TestGoFedVerifiesOurSignatures(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	body := []byte("some request bytes")
	for _, path := range []string{"/fabric.test.v1.Echo/Echo", "/a.B/C"} {
		t.Run(path, func(t *testing.T) {
			h, err := httpsig.Sign("pastiche@h7", "POST", path, endpoint, time.Now(), sha256.Sum256(body), func(data []byte) ([]byte, error) {
				return ed25519.Sign(priv, data), nil
			})
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			verify := func(host string, key ed25519.PublicKey) error {
				r, _ := http.NewRequest("POST", "http://"+host+path, bytes.NewReader(body))
				r.Header.Set("Date", h.Date)
				r.Header.Set("Digest", h.Digest)
				r.Header.Set("Signature", h.Signature)
				v, err := gofed.NewVerifier(r)
				if err != nil {
					t.Fatalf("go-fed NewVerifier: %v", err)
				}
				if v.KeyId() != "pastiche@h7" {
					t.Errorf("go-fed KeyId = %q", v.KeyId())
				}
				return v.Verify(key, gofed.ED25519)
			}
			if err := verify(endpoint, pub); err != nil {
				t.Errorf("go-fed Verify: %v", err)
			}
			other, _, _ := ed25519.GenerateKey(nil)
			if err := verify(endpoint, other); err == nil {
				t.Errorf("go-fed Verify with another key succeeded")
			}
			// The host is signed: the same headers sent to another
			// endpoint do not verify.
			if err := verify("203.0.113.5:7450", pub); err == nil {
				t.Errorf("go-fed Verify of the request sent to another host succeeded")
			}
		})
	}
}

func TestWeVerifyGoFedSignatures(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	body := []byte("some request bytes")
	const path = "/fabric.test.v1.Echo/Echo"
	r, _ := http.NewRequest("POST", "http://"+endpoint+path, bytes.NewReader(body))
	r.Header.Set("Date", httpsig.FormatDate(time.Now()))
	r.Header["Host"] = []string{r.Host} // go-fed's signer reads the header (its verifier falls back to r.Host)
	signer, _, err := gofed.NewSigner([]gofed.Algorithm{gofed.ED25519}, gofed.DigestSha256,
		[]string{gofed.RequestTarget, "host", "date", "digest"}, gofed.Signature, 0)
	if err != nil {
		t.Fatalf("go-fed NewSigner: %v", err)
	}
	if err := signer.SignRequest(priv, "pastiche@h7", r, body); err != nil {
		t.Fatalf("go-fed SignRequest: %v", err)
	}
	h := httpsig.Headers{Host: r.Host, Date: r.Header.Get("Date"), Digest: r.Header.Get("Digest"), Signature: r.Header.Get("Signature")}
	// go-fed v1.1.0 writes algorithm="hs2019" (a later draft's way of
	// hiding the algorithm), which this endpoint refuses: only "ed25519".
	lookup := func(string) (ed25519.PublicKey, error) { return pub, nil }
	start := time.Now().Add(-time.Hour)
	v := httpsig.NewVerifier(httpsig.VerifierConfig{Host: endpoint, Start: start, Lookup: lookup})
	req := httpsig.Request{Method: "POST", Path: path, Headers: h, BodySHA256: sha256.Sum256(body)}
	if _, err := v.Verify(req); err == nil || !strings.Contains(err.Error(), `"hs2019"`) {
		t.Fatalf("Verify(hs2019) = %v, want unsupported algorithm", err)
	}
	// The algorithm parameter is not signed: naming it fixes the header.
	req.Headers.Signature = strings.Replace(h.Signature, `algorithm="hs2019"`, `algorithm="ed25519"`, 1)
	// Another endpoint refuses it: go-fed signed our host.
	other := httpsig.NewVerifier(httpsig.VerifierConfig{Host: "203.0.113.5:7450", Start: start, Lookup: lookup})
	if _, err := other.Verify(req); !errors.Is(err, httpsig.ErrWrongHost) {
		t.Errorf("Verify by another endpoint = %v, want ErrWrongHost", err)
	}
	got, err := v.Verify(req)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.KeyID != "pastiche@h7" {
		t.Errorf("KeyID = %q", got.KeyID)
	}
}
