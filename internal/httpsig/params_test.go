package httpsig

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const goodSig = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="

func TestParamsRoundTrip(t *testing.T) {
	sig := make([]byte, 64)
	for i := range sig {
		sig[i] = byte(i)
	}
	p := Params{KeyID: "pastiche@h7", Algorithm: Algorithm, Headers: []string{"(request-target)", "date", "digest"}, Signature: sig}
	s := p.String()
	want := `keyId="pastiche@h7",algorithm="ed25519",headers="(request-target) date digest",signature="` + goodSig + `"`
	if diff := cmp.Diff(want, s); diff != "" {
		t.Fatalf("String() (-want +got):\n%s", diff)
	}
	got, err := ParseSignature(s)
	if err != nil {
		t.Fatalf("ParseSignature(%q): %v", s, err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("ParseSignature(String()) (-want +got):\n%s", diff)
	}
}

func TestParseSignatureAnyOrder(t *testing.T) {
	s := `signature="` + goodSig + `",headers="(request-target) date digest",algorithm="ed25519",keyId="a"`
	p, err := ParseSignature(s)
	if err != nil {
		t.Fatalf("ParseSignature: %v", err)
	}
	if p.KeyID != "a" || len(p.Signature) != 64 {
		t.Errorf("ParseSignature = %+v", p)
	}
}

func TestParseSignatureRejects(t *testing.T) {
	const (
		k = `keyId="a"`
		a = `algorithm="ed25519"`
		h = `headers="(request-target) date digest"`
		s = `signature="` + goodSig + `"`
	)
	join := func(parts ...string) string { return strings.Join(parts, ",") }
	tests := []struct {
		name, header, want string
	}{
		{"empty", "", "empty header"},
		{"garbage", "hello", `expected name="value"`},
		{"unknown parameter", join(k, a, h, s, `created="1"`), `unknown parameter "created"`},
		{"duplicate", join(k, a, h, s, `keyId="b"`), `duplicate parameter "keyId"`},
		{"unquoted", join(`keyId=a`, a, h, s), `parameter "keyId": value is not quoted`},
		{"unterminated", join(k, a, h, `signature="abc`), "unterminated quoted value"},
		{"missing keyId", join(a, h, s), `missing parameter "keyId"`},
		{"missing algorithm", join(k, h, s), `missing parameter "algorithm"`},
		{"missing headers", join(k, a, s), `missing parameter "headers"`},
		{"missing signature", join(k, a, h), `missing parameter "signature"`},
		{"trailing comma", join(k, a, h, s) + ",", "expected ',' and another parameter"},
		{"space after comma", k + ", " + join(a, h, s), "invalid parameter name"},
		{"junk after value", join(k, a, h, s) + "x", "expected ',' and another parameter"},
		{"empty keyId", join(`keyId=""`, a, h, s), "empty keyId"},
		{"keyId with comma", join(`keyId="a,b"`, a, h, s), `parameter "keyId": keyId holds`},
		{"keyId with space", join(`keyId="a b"`, a, h, s), `parameter "keyId": keyId holds`},
		{"keyId too long", join(`keyId="`+strings.Repeat("k", MaxKeyIDLen+1)+`"`, a, h, s), "more than 256"},
		{"control character", join("keyId=\"a\tb\"", a, h, s), "control"},
		{"backslash", join(`keyId="a\"`, a, h, s), `'\' character`},
		{"empty algorithm", join(k, `algorithm=""`, h, s), `parameter "algorithm" is empty`},
		{"double space in headers", join(k, a, `headers="(request-target)  date digest"`, s), "empty header name"},
		{"signature not base64", join(k, a, h, `signature="!!!"`), `parameter "signature" is not standard base64`},
		{"signature url base64", join(k, a, h, `signature="-_-_"`), "not standard base64"},
		{"empty signature", join(k, a, h, `signature=""`), "not standard base64"},
		{"too long", join(k, a, h, s) + strings.Repeat("x", MaxSignatureHeaderLen), "more than 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSignature(tt.header)
			if !errors.Is(err, ErrMalformedSignature) {
				t.Fatalf("ParseSignature(%q) = %v, want ErrMalformedSignature", tt.header, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSignature(%q) = %q, want it to contain %q", tt.header, err, tt.want)
			}
		})
	}
}

func TestParseDate(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"Sat, 07 Jun 2014 20:51:35 GMT", true},
		{"Tue, 07 Jun 2014 20:51:35 GMT", false}, // the draft's example: 7 June 2014 was a Saturday
		{"Saturday, 07-Jun-14 20:51:35 GMT", false},
		{"Sat Jun  7 20:51:35 2014", false},
		{"Sat, 7 Jun 2014 20:51:35 GMT", false},
		{"Sat, 07 Jun 2014 20:51:35 UTC", false},
		{"Sat, 07 Jun 2014 20:51:35 GMT ", false},
		{"2014-06-07T20:51:35Z", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseDate(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseDate(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformedDate) {
				t.Errorf("ParseDate(%q) = %v, want ErrMalformedDate", tt.in, err)
			}
		})
	}
}

func TestSigningString(t *testing.T) {
	got := SigningString(RequestTarget("POST", "/pkg.Service/Method"), "203.0.113.3:7450", "Sat, 07 Jun 2014 20:51:35 GMT", Digest(nil))
	want := "(request-target): post /pkg.Service/Method\n" +
		"host: 203.0.113.3:7450\n" +
		"date: Sat, 07 Jun 2014 20:51:35 GMT\n" +
		"digest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SigningString (-want +got):\n%s", diff)
	}
}
