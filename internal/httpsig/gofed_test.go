package httpsig_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"time"

	gofed "github.com/go-fed/httpsig"

	"github.com/fabricmesh/fabric/internal/httpsig"
)

// These tests check the scheme against an independent implementation of
// the draft, github.com/go-fed/httpsig.

func TestGoFedVerifiesOurSignatures(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	body := []byte("some request bytes")
	for _, path := range []string{"/fabric.test.v1.Echo/Echo", "/a.B/C"} {
		t.Run(path, func(t *testing.T) {
			h, err := httpsig.Sign("pastiche@h7", "POST", path, time.Now(), sha256.Sum256(body), func(data []byte) ([]byte, error) {
				return ed25519.Sign(priv, data), nil
			})
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			r, _ := http.NewRequest("POST", "http://endpoint"+path, bytes.NewReader(body))
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
			if err := v.Verify(pub, gofed.ED25519); err != nil {
				t.Errorf("go-fed Verify: %v", err)
			}
			other, _, _ := ed25519.GenerateKey(nil)
			if err := v.Verify(other, gofed.ED25519); err == nil {
				t.Errorf("go-fed Verify with another key succeeded")
			}
		})
	}
}

func TestWeVerifyGoFedSignatures(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	body := []byte("some request bytes")
	const path = "/fabric.test.v1.Echo/Echo"
	r, _ := http.NewRequest("POST", "http://endpoint"+path, bytes.NewReader(body))
	r.Header.Set("Date", httpsig.FormatDate(time.Now()))
	signer, _, err := gofed.NewSigner([]gofed.Algorithm{gofed.ED25519}, gofed.DigestSha256,
		[]string{gofed.RequestTarget, "date", "digest"}, gofed.Signature, 0)
	if err != nil {
		t.Fatalf("go-fed NewSigner: %v", err)
	}
	if err := signer.SignRequest(priv, "pastiche@h7", r, body); err != nil {
		t.Fatalf("go-fed SignRequest: %v", err)
	}
	h := httpsig.Headers{Date: r.Header.Get("Date"), Digest: r.Header.Get("Digest"), Signature: r.Header.Get("Signature")}
	// go-fed v1.1.0 writes algorithm="hs2019" (a later draft's way of
	// hiding the algorithm), which this endpoint refuses: only "ed25519".
	v := httpsig.NewVerifier(httpsig.VerifierConfig{Lookup: func(string) (ed25519.PublicKey, error) { return pub, nil }})
	req := httpsig.Request{Method: "POST", Path: path, Headers: h, BodySHA256: sha256.Sum256(body)}
	if _, err := v.Verify(req); err == nil || !strings.Contains(err.Error(), `"hs2019"`) {
		t.Fatalf("Verify(hs2019) = %v, want unsupported algorithm", err)
	}
	// The algorithm parameter is not signed: naming it fixes the header.
	req.Headers.Signature = strings.Replace(h.Signature, `algorithm="hs2019"`, `algorithm="ed25519"`, 1)
	got, err := v.Verify(req)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.KeyID != "pastiche@h7" {
		t.Errorf("KeyID = %q", got.KeyID)
	}
}
