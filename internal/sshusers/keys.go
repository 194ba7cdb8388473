package sshusers

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// Key is a parsed authorized key.
type Key struct {
	// Type is the key type, e.g. ssh-ed25519.
	Type string
	// Fingerprint is the SHA-256 fingerprint as ssh-keygen -l prints it,
	// "SHA256:...".
	Fingerprint string
	Comment     string
	// Line is the key in canonical authorized_keys form: "TYPE BASE64" or
	// "TYPE BASE64 COMMENT", without options.
	Line string
}

// MinRSABits is the smallest RSA key accepted.
const MinRSABits = 2048

// ParseKey parses one public key in authorized_keys format, "TYPE BASE64
// [COMMENT]" (the line of an id_*.pub file). Options, certificates, DSA
// keys, RSA keys under MinRSABits bits and anything on more than one line
// are refused. Errors never quote the text: it might be a secret pasted by
// mistake.
func ParseKey(text string) (Key, error) {
	s := strings.TrimSpace(text)
	switch {
	case s == "":
		return Key{}, errors.New("empty key")
	case strings.Contains(s, "PRIVATE KEY"):
		return Key{}, errors.New("this is a private key: give the public key (the .pub file) and keep the private key secret")
	case len(s) > MaxKeyLen:
		return Key{}, fmt.Errorf("key is %d bytes long, more than the %d allowed", len(s), MaxKeyLen)
	case strings.ContainsAny(s, "\r\n"):
		return Key{}, errors.New("key spans several lines; give one key per entry")
	case !utf8.ValidString(s):
		return Key{}, errors.New("key is not valid UTF-8")
	}
	pub, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return Key{}, fmt.Errorf("not a public key in authorized_keys format (want \"TYPE BASE64 [COMMENT]\", as in an id_*.pub file): %s", whyNotKey(s))
	}
	if len(options) > 0 {
		return Key{}, fmt.Errorf("key options (%s) are not supported: give the key without options", optionNames(options))
	}
	if err := checkType(pub); err != nil {
		return Key{}, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return Key{Type: pub.Type(), Fingerprint: ssh.FingerprintSHA256(pub), Comment: comment, Line: line}, nil
}

// whyNotKey explains why s is not "TYPE BASE64 [COMMENT]". (x/crypto's
// error is about its last attempt, which reads the type as an option.)
func whyNotKey(s string) string {
	fields := strings.Fields(s)
	if len(fields) < 2 {
		return "it has fewer than two fields"
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return fmt.Sprintf("its second field is not base64 (%v)", err)
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return fmt.Sprintf("its key data is invalid (%v)", err)
	}
	if pub.Type() != fields[0] {
		return fmt.Sprintf("its type field does not match its key data, which is %s", pub.Type())
	}
	return "it is not valid"
}

func checkType(pub ssh.PublicKey) error {
	if _, ok := pub.(*ssh.Certificate); ok {
		return fmt.Errorf("%s is a certificate; give a plain public key", pub.Type())
	}
	switch pub.Type() {
	case ssh.InsecureKeyAlgoDSA:
		return errors.New("DSA keys (ssh-dss) are not accepted: OpenSSH no longer supports them; use ssh-ed25519")
	case ssh.KeyAlgoRSA:
		ck, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return errors.New("unreadable RSA key")
		}
		if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); !ok || rk.N.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key of %d bits: at least %d are needed", rsaBits(ck), MinRSABits)
		}
	}
	return nil
}

func rsaBits(ck ssh.CryptoPublicKey) int {
	if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok {
		return rk.N.BitLen()
	}
	return 0
}

// optionNames lists the names of authorized_keys options, without their
// values.
func optionNames(options []string) string {
	names := make([]string, len(options))
	for i, o := range options {
		names[i], _, _ = strings.Cut(o, "=")
	}
	return strings.Join(names, ",")
}

// Label names a key given as text in messages, without quoting its key
// material: its comment when the text looks like "TYPE BASE64 COMMENT",
// else nothing. It returns "" or ` ("comment")`.
func Label(text string) string {
	s := strings.TrimSpace(text)
	if strings.Contains(s, "PRIVATE KEY") || strings.ContainsAny(s, "\r\n") {
		return ""
	}
	fields := strings.Fields(s)
	if len(fields) < 3 {
		return ""
	}
	return fmt.Sprintf(" (%q)", shorten(strings.Join(fields[2:], " ")))
}

// shorten cuts a comment for messages.
func shorten(comment string) string {
	if r := []rune(comment); len(r) > 60 {
		return string(r[:57]) + "..."
	}
	return comment
}

// Describe names a parsed key for people: its type, fingerprint and
// comment (shortened).
func (k Key) Describe() string {
	if k.Comment == "" {
		return k.Type + " " + k.Fingerprint
	}
	return fmt.Sprintf("%s %s %q", k.Type, k.Fingerprint, shorten(k.Comment))
}
