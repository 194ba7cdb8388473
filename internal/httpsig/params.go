package httpsig

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// Names of the signature header's parameters (draft-cavage-10 section 2.1).
const (
	paramKeyID     = "keyId"
	paramAlgorithm = "algorithm"
	paramHeaders   = "headers"
	paramSignature = "signature"
)

// MaxSignatureHeaderLen bounds the signature header ParseSignature accepts.
const MaxSignatureHeaderLen = 2048

// MaxKeyIDLen bounds a keyId.
const MaxKeyIDLen = 256

// Params are the parameters of a signature header.
type Params struct {
	KeyID     string
	Algorithm string
	Headers   []string // names of the signed headers, in signing order
	Signature []byte   // raw signature (base64 on the wire)
}

// String formats p as a signature header value:
// keyId="...",algorithm="...",headers="...",signature="...". It does not
// validate p; Sign only produces valid parameters.
func (p Params) String() string {
	return fmt.Sprintf(`%s="%s",%s="%s",%s="%s",%s="%s"`,
		paramKeyID, p.KeyID,
		paramAlgorithm, p.Algorithm,
		paramHeaders, strings.Join(p.Headers, " "),
		paramSignature, base64.StdEncoding.EncodeToString(p.Signature))
}

// ParseSignature parses a signature header value strictly: a comma-separated
// list (no spaces) of name="value" pairs with the four parameters keyId,
// algorithm, headers and signature, each exactly once, in any order. Values
// are printable ASCII without '"' or '\' (draft-cavage-10 has no escaping).
// Errors wrap ErrMalformedSignature and name the offending parameter.
func ParseSignature(s string) (Params, error) {
	if len(s) > MaxSignatureHeaderLen {
		return Params{}, malformed("header is %d bytes, more than %d", len(s), MaxSignatureHeaderLen)
	}
	raw, err := splitParams(s)
	if err != nil {
		return Params{}, err
	}
	return paramsFromMap(raw)
}

// splitParams splits s into its name="value" pairs, rejecting duplicates and
// unknown names.
func splitParams(s string) (map[string]string, error) {
	if s == "" {
		return nil, malformed("empty header")
	}
	raw := make(map[string]string, 4)
	for rest := s; ; {
		name, value, tail, err := nextParam(rest)
		if err != nil {
			return nil, err
		}
		if !knownParam(name) {
			return nil, malformed("unknown parameter %q", name)
		}
		if _, dup := raw[name]; dup {
			return nil, malformed("duplicate parameter %q", name)
		}
		raw[name] = value
		if tail == "" {
			return raw, nil
		}
		if tail[0] != ',' || len(tail) == 1 {
			return nil, malformed("expected ',' and another parameter after %q", name)
		}
		rest = tail[1:]
	}
}

// nextParam reads one name="value" from the start of s.
func nextParam(s string) (name, value, tail string, err error) {
	eq := strings.IndexByte(s, '=')
	if eq <= 0 {
		return "", "", "", malformed("expected name=\"value\" at %q", clip(s))
	}
	name = s[:eq]
	for _, c := range []byte(name) {
		if !isNameChar(c) {
			return "", "", "", malformed("invalid parameter name %q", clip(name))
		}
	}
	rest := s[eq+1:]
	if rest == "" || rest[0] != '"' {
		return "", "", "", malformed("parameter %q: value is not quoted", name)
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return "", "", "", malformed("parameter %q: unterminated quoted value", name)
	}
	value = rest[1 : 1+end]
	for _, c := range []byte(value) {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return "", "", "", malformed("parameter %q: value holds a control, non-ASCII or '\\' character", name)
		}
	}
	return name, value, rest[2+end:], nil
}

// paramsFromMap checks and decodes the four parameters.
func paramsFromMap(raw map[string]string) (Params, error) {
	for _, name := range []string{paramKeyID, paramAlgorithm, paramHeaders, paramSignature} {
		if _, ok := raw[name]; !ok {
			return Params{}, malformed("missing parameter %q", name)
		}
	}
	if err := checkKeyID(raw[paramKeyID]); err != nil {
		return Params{}, malformed("parameter %q: %v", paramKeyID, err)
	}
	if raw[paramAlgorithm] == "" {
		return Params{}, malformed("parameter %q is empty", paramAlgorithm)
	}
	headers := strings.Split(raw[paramHeaders], " ")
	for _, h := range headers {
		if h == "" {
			return Params{}, malformed("parameter %q: empty header name (names are separated by single spaces)", paramHeaders)
		}
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(raw[paramSignature])
	if err != nil || len(sig) == 0 {
		return Params{}, malformed("parameter %q is not standard base64", paramSignature)
	}
	return Params{KeyID: raw[paramKeyID], Algorithm: raw[paramAlgorithm], Headers: headers, Signature: sig}, nil
}

// checkKeyID accepts 1 to MaxKeyIDLen printable ASCII characters without
// '"', '\' or ',' (other implementations split the header on commas).
func checkKeyID(keyID string) error {
	if keyID == "" {
		return fmt.Errorf("empty keyId")
	}
	if len(keyID) > MaxKeyIDLen {
		return fmt.Errorf("keyId is %d bytes, more than %d", len(keyID), MaxKeyIDLen)
	}
	for _, c := range []byte(keyID) {
		if c <= 0x20 || c > 0x7e || c == '"' || c == '\\' || c == ',' {
			return fmt.Errorf("keyId holds a space, control, non-ASCII, '\"', '\\' or ',' character")
		}
	}
	return nil
}

func knownParam(name string) bool {
	switch name {
	case paramKeyID, paramAlgorithm, paramHeaders, paramSignature:
		return true
	}
	return false
}

func isNameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedSignature, fmt.Sprintf(format, args...))
}
