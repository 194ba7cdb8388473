package sshusers_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func TestParseKey(t *testing.T) {
	alice := sshuserstest.Key(1, "alice@laptop")
	bare := sshuserstest.Key(1, "")
	tests := []struct {
		name string
		text string
		want sshusers.Key
	}{
		{"ed25519 with comment", alice, sshusers.Key{
			Type: "ssh-ed25519", Fingerprint: sshuserstest.Fingerprint(1), Comment: "alice@laptop", Line: alice,
		}},
		{"no comment", bare, sshusers.Key{Type: "ssh-ed25519", Fingerprint: sshuserstest.Fingerprint(1), Line: bare}},
		{"spaces and a trailing newline", "  " + strings.Replace(bare, " ", "   ", 1) + "   two words \n", sshusers.Key{
			Type: "ssh-ed25519", Fingerprint: sshuserstest.Fingerprint(1), Comment: "two words", Line: bare + " two words",
		}},
		{"rsa 2048", sshuserstest.RSA2048, sshusers.Key{
			Type: "ssh-rsa", Fingerprint: sshuserstest.RSA2048Fingerprint, Comment: "carol@rsa", Line: sshuserstest.RSA2048,
		}},
		{"ecdsa", sshuserstest.ECDSA256, sshusers.Key{
			Type: "ecdsa-sha2-nistp256", Fingerprint: fingerprint(t, sshuserstest.ECDSA256), Comment: "dave@ecdsa", Line: sshuserstest.ECDSA256,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sshusers.ParseKey(tt.text)
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseKey (-want +got):\n%s", diff)
			}
		})
	}
}

func fingerprint(t *testing.T, line string) string {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(pub)
}

func TestParseKeyRefuses(t *testing.T) {
	key := sshuserstest.Key(1, "alice@laptop")
	fields := strings.Fields(key)
	const notKey = `not a public key in authorized_keys format (want "TYPE BASE64 [COMMENT]", as in an id_*.pub file): `
	tests := []struct {
		name, text, want string
	}{
		{"empty", "  ", "empty key"},
		{"private key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----",
			"this is a private key: give the public key (the .pub file) and keep the private key secret"},
		{"two keys", key + "\n" + sshuserstest.Key(2, ""), "key spans several lines; give one key per entry"},
		{"too long", "ssh-ed25519 " + strings.Repeat("A", sshusers.MaxKeyLen), "key is 8204 bytes long, more than the 8192 allowed"},
		{"options", `from="192.0.2.1",no-pty ` + key, "key options (from,no-pty) are not supported: give the key without options"},
		{"one field", "AAAAC3NzaC1lZDI1NTE5", notKey + "it has fewer than two fields"},
		{"garbage", "hello world", notKey + "its second field is not base64 (illegal base64 data at input byte 4)"},
		{"bad base64", fields[0] + " " + fields[1][:20] + "!!" + fields[1][22:], notKey + "its second field is not base64 (illegal base64 data at input byte 20)"},
		{"truncated", fields[0] + " " + fields[1][:40], notKey + "its key data is invalid (ssh: short read)"},
		{"type mismatch", "ssh-rsa " + fields[1], notKey + "its type field does not match its key data, which is ssh-ed25519"},
		{"rsa 1024", sshuserstest.RSA1024, "RSA key of 1024 bits: at least 2048 are needed"},
		{"dsa", sshuserstest.DSA, "DSA keys (ssh-dss) are not accepted: OpenSSH no longer supports them; use ssh-ed25519"},
		{"certificate", certificate(t), "ssh-ed25519-cert-v01@openssh.com is a certificate; give a plain public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sshusers.ParseKey(tt.text)
			if err == nil {
				t.Fatal("ParseKey succeeded")
			}
			if err.Error() != tt.want {
				t.Errorf("ParseKey error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func certificate(t *testing.T) string {
	t.Helper()
	_, caPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sshuserstest.Key(1, "")))
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, ValidPrincipals: []string{"alice"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
}

func TestLabel(t *testing.T) {
	tests := []struct{ text, want string }{
		{sshuserstest.Key(1, "alice@laptop"), ` ("alice@laptop")`},
		{"ssh-ed25519 AAAA", ""},
		{"ssh-ed25519 broken two words", ` ("two words")`},
		{"x y " + strings.Repeat("é", 70), ` ("` + strings.Repeat("é", 57) + `...")`},
		{"-----BEGIN OPENSSH PRIVATE KEY----- abc def", ""},
		{"a b c\nd", ""},
	}
	for _, tt := range tests {
		if got := sshusers.Label(tt.text); got != tt.want {
			t.Errorf("Label(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, name := range []string{"alice", "a", "bob-2", "c_d", "a0123456789012345678901234567890"} {
		if err := sshusers.CheckName(name); err != nil {
			t.Errorf("CheckName(%q): %v", name, err)
		}
	}
	tests := []struct{ name, want string }{
		{"", `invalid user name "": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"Alice", `invalid user name "Alice": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"1bob", `invalid user name "1bob": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"-bob", `invalid user name "-bob": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"a01234567890123456789012345678901", `invalid user name "a01234567890123456789012345678901": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"bob$", `invalid user name "bob$": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"root", `user name "root" is reserved: it is a system account or fabric's group`},
		{"www-data", `user name "www-data" is reserved: it is a system account or fabric's group`},
		{"fabric-users", `user name "fabric-users" is reserved: it is a system account or fabric's group`},
		{"systemd-network", `user name "systemd-network" is reserved: names starting with "systemd-" are system accounts`},
	}
	for _, tt := range tests {
		err := sshusers.CheckName(tt.name)
		if err == nil || err.Error() != tt.want {
			t.Errorf("CheckName(%q) = %v, want %s", tt.name, err, tt.want)
		}
	}
}
