package httpsig

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Algorithm is the only signature algorithm fabric uses.
const Algorithm = "ed25519"

// SignedHeaders is the value of the headers parameter: the signed headers,
// in signing order.
const SignedHeaders = "(request-target) host date digest"

// DigestPrefix starts a digest header: "SHA-256=" then the standard base64
// of the body's SHA-256.
const DigestPrefix = "SHA-256="

// Headers are the headers of a signed request, as carried on the wire
// (empty when missing). Host is the endpoint the request is addressed to,
// its host:port: HTTP/1.1's Host header, HTTP/2's :authority.
type Headers struct {
	Host      string
	Date      string
	Digest    string
	Signature string
}

// RequestTarget is the value of the (request-target) pseudo-header: the
// lowercase method, a space and the path, e.g. "post /pkg.Service/Method".
func RequestTarget(method, path string) string {
	return strings.ToLower(method) + " " + path
}

// Digest is the digest header of body: "SHA-256=<base64 of sha256(body)>".
func Digest(body []byte) string {
	return DigestOfSum(sha256.Sum256(body))
}

// DigestOfSum is the digest header of a body whose SHA-256 is sum.
func DigestOfSum(sum [sha256.Size]byte) string {
	return DigestPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

// FormatDate formats t as an RFC 7231 IMF-fixdate in GMT, truncated to the
// second: "Sat, 07 Jun 2014 20:51:35 GMT".
func FormatDate(t time.Time) string {
	return t.UTC().Format(http.TimeFormat)
}

// ParseDate parses an IMF-fixdate strictly: the value must be exactly what
// FormatDate produces for the time it denotes (right weekday, GMT, two-digit
// fields). Errors wrap ErrMalformedDate.
func ParseDate(s string) (time.Time, error) {
	t, err := time.Parse(http.TimeFormat, s)
	if err != nil || FormatDate(t) != s {
		return time.Time{}, fmt.Errorf("%w: %q is not an IMF-fixdate like %q", ErrMalformedDate, clip(s), FormatDate(time.Unix(0, 0)))
	}
	return t, nil
}

// SigningString is the string an ed25519 signature covers: each signed
// header as "name: value", joined by "\n", in SignedHeaders order.
func SigningString(target, host, date, digest string) string {
	return "(request-target): " + target + "\nhost: " + host + "\ndate: " + date + "\ndigest: " + digest
}

// SignFunc signs data with the client's private key.
type SignFunc func(data []byte) ([]byte, error)

// Sign makes the headers of a request to method and path at host (the
// endpoint's host:port), dated date, whose body has SHA-256 bodySum, signed
// by sign as keyID.
func Sign(keyID, method, path, host string, date time.Time, bodySum [sha256.Size]byte, sign SignFunc) (Headers, error) {
	if err := checkKeyID(keyID); err != nil {
		return Headers{}, fmt.Errorf("signing %s %s: %w", method, path, err)
	}
	if err := checkHost(host); err != nil {
		return Headers{}, fmt.Errorf("signing %s %s: %w", method, path, err)
	}
	h := Headers{Host: host, Date: FormatDate(date), Digest: DigestOfSum(bodySum)}
	sig, err := sign([]byte(SigningString(RequestTarget(method, path), h.Host, h.Date, h.Digest)))
	if err != nil {
		return Headers{}, fmt.Errorf("signing %s %s as %q: %w", method, path, keyID, err)
	}
	h.Signature = Params{
		KeyID:     keyID,
		Algorithm: Algorithm,
		Headers:   strings.Split(SignedHeaders, " "),
		Signature: sig,
	}.String()
	return h, nil
}

// MaxHostLen bounds a host header.
const MaxHostLen = 255

// checkHost accepts 1 to MaxHostLen printable ASCII characters without
// spaces: a signing string has one header per line.
func checkHost(host string) error {
	if host == "" {
		return fmt.Errorf("empty host")
	}
	if len(host) > MaxHostLen {
		return fmt.Errorf("host is %d bytes, more than %d", len(host), MaxHostLen)
	}
	for _, c := range []byte(host) {
		if c <= 0x20 || c > 0x7e {
			return fmt.Errorf("host holds a space, control or non-ASCII character")
		}
	}
	return nil
}
