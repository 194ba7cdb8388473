package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeRaw replaces dir/name with content and mode perm (umask aside).
func writeRaw(tb testing.TB, dir, name, content string, perm os.FileMode) {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		tb.Fatal(err)
	}
}

func readRaw(tb testing.TB, dir, name string) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func pemString(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func ecdsaKeyPEM(tb testing.TB) string {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pemString("PRIVATE KEY", der)
}

// snapshot returns the content and mode of every file in dir.
func snapshot(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			tb.Fatal(err)
		}
		content := "(directory)"
		if !e.IsDir() {
			content = readRaw(tb, dir, e.Name())
		}
		out[e.Name()] = info.Mode().String() + " " + content
	}
	return out
}

// fileLines returns every line of 12 or more characters in dir's files,
// except PEM armour lines: content an error must not echo.
func fileLines(tb testing.TB, dir string) []string {
	tb.Helper()
	var out []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		for _, line := range strings.Split(readRaw(tb, dir, e.Name()), "\n") {
			if line = strings.TrimSpace(line); len(line) >= 12 && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	return out
}

func TestRefusedIdentities(t *testing.T) {
	zeroKey := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name   string
		setup  func(tb testing.TB, dir string)
		wantIn []string // substrings of the error
	}{
		{name: "wg.key not base64", setup: raw(WGKeyFile, "this is not a key!\n", 0o600),
			wantIn: []string{WGKeyFile, "not valid base64"}},
		{name: "wg.key too short", setup: raw(WGKeyFile, base64.StdEncoding.EncodeToString([]byte("sixteen byte key"))+"\n", 0o600),
			wantIn: []string{WGKeyFile, "must be 32 bytes, got 16"}},
		{name: "wg.key in hex", setup: raw(WGKeyFile, hex.EncodeToString(make([]byte, 32))+"\n", 0o600),
			wantIn: []string{WGKeyFile, "must be 32 bytes, got 48"}},
		{name: "wg.key empty", setup: raw(WGKeyFile, "", 0o600),
			wantIn: []string{WGKeyFile, "is empty"}},
		{name: "wg.key all zeros", setup: raw(WGKeyFile, zeroKey+"\n", 0o600),
			wantIn: []string{WGKeyFile, "all zeros"}},
		{name: "wg.key is a directory", setup: func(tb testing.TB, dir string) {
			if err := os.Remove(filepath.Join(dir, WGKeyFile)); err != nil {
				tb.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, WGKeyFile), 0o700); err != nil {
				tb.Fatal(err)
			}
		}, wantIn: []string{WGKeyFile, "not a regular file"}},
		{name: "signing.key not PEM", setup: raw(SigningKeyFile, "just some text in the file\n", 0o600),
			wantIn: []string{SigningKeyFile, "no PEM block"}},
		{name: "signing.key empty", setup: raw(SigningKeyFile, "\n", 0o600),
			wantIn: []string{SigningKeyFile, "is empty"}},
		{name: "signing.key holds a certificate", setup: func(tb testing.TB, dir string) {
			writeRaw(tb, dir, SigningKeyFile, readRaw(tb, dir, TLSCertFile), 0o600)
		}, wantIn: []string{SigningKeyFile, `PEM block type is "CERTIFICATE", want "PRIVATE KEY"`}},
		{name: "signing.key not PKCS#8", setup: raw(SigningKeyFile, pemString("PRIVATE KEY", []byte("not DER at all, just bytes")), 0o600),
			wantIn: []string{SigningKeyFile, "not a PKCS#8 private key"}},
		{name: "signing.key is ECDSA", setup: func(tb testing.TB, dir string) {
			writeRaw(tb, dir, SigningKeyFile, ecdsaKeyPEM(tb), 0o600)
		}, wantIn: []string{SigningKeyFile, "want an ed25519 private key, got *ecdsa.PrivateKey"}},
		{name: "signing.key with trailing data", setup: func(tb testing.TB, dir string) {
			writeRaw(tb, dir, SigningKeyFile, readRaw(tb, dir, SigningKeyFile)+"trailing garbage\n", 0o600)
		}, wantIn: []string{SigningKeyFile, "unexpected data after the PEM block"}},
		{name: "signing.key encrypted", setup: func(tb testing.TB, dir string) {
			block, _ := pem.Decode([]byte(readRaw(tb, dir, SigningKeyFile)))
			block.Headers = map[string]string{"Proc-Type": "4,ENCRYPTED"}
			writeRaw(tb, dir, SigningKeyFile, string(pem.EncodeToMemory(block)), 0o600)
		}, wantIn: []string{SigningKeyFile, "encrypted keys are not supported"}},
		{name: "tls.key not PEM", setup: raw(TLSKeyFile, "just some text in the file\n", 0o600),
			wantIn: []string{TLSKeyFile, "no PEM block"}},
		{name: "tls.key is ECDSA", setup: func(tb testing.TB, dir string) {
			writeRaw(tb, dir, TLSKeyFile, ecdsaKeyPEM(tb), 0o600)
		}, wantIn: []string{TLSKeyFile, "want an ed25519 private key"}},
		{name: "tls.crt not PEM", setup: raw(TLSCertFile, "just some text in the file\n", 0o644),
			wantIn: []string{TLSCertFile, "no PEM block"}},
		{name: "tls.crt not a certificate", setup: raw(TLSCertFile, pemString("CERTIFICATE", []byte("not DER at all, just bytes")), 0o600),
			wantIn: []string{TLSCertFile, "not an X.509 certificate"}},
		{name: "tls.crt holds the key", setup: func(tb testing.TB, dir string) {
			writeRaw(tb, dir, TLSCertFile, readRaw(tb, dir, TLSKeyFile), 0o600)
		}, wantIn: []string{TLSCertFile, `PEM block type is "PRIVATE KEY", want "CERTIFICATE"`}},
		{name: "tls.crt for another key", setup: func(tb testing.TB, dir string) {
			other := privateDir(tb)
			mustLoad(tb, other)
			writeRaw(tb, dir, TLSCertFile, readRaw(tb, other, TLSCertFile), 0o600)
		}, wantIn: []string{TLSCertFile, "does not match tls.key"}},
		{name: "tls.crt without tls.key", setup: func(tb testing.TB, dir string) {
			if err := os.Remove(filepath.Join(dir, TLSKeyFile)); err != nil {
				tb.Fatal(err)
			}
		}, wantIn: []string{"tls.crt exists but", "tls.key is missing"}},
		{name: "directory open to others", setup: func(tb testing.TB, dir string) {
			if err := os.Chmod(dir, 0o755); err != nil {
				tb.Fatal(err)
			}
		}, wantIn: []string{"identity directory", "has mode 0755", "(chmod 700 "}},
		{name: "wg.key readable by group", setup: chmod(WGKeyFile, 0o640),
			wantIn: []string{WGKeyFile, "has mode 0640", "must not be accessible by group or others"}},
		{name: "signing.key readable by others", setup: chmod(SigningKeyFile, 0o604),
			wantIn: []string{SigningKeyFile, "has mode 0604"}},
		{name: "tls.key writable by group", setup: chmod(TLSKeyFile, 0o620),
			wantIn: []string{TLSKeyFile, "has mode 0620"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			valid := mustLoad(t, dir)
			secret := secrets(t, dir, valid)
			tt.setup(t, dir)
			before := snapshot(t, dir)

			id, err := LoadOrCreate(dir, testLogger(t, nil))
			if err == nil {
				t.Fatalf("LoadOrCreate succeeded, want an error containing %q", tt.wantIn)
			}
			t.Logf("error: %v", err)
			if id != nil {
				t.Error("LoadOrCreate returned an identity along with its error")
			}
			for _, want := range tt.wantIn {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			checkNoSecrets(t, "error", err.Error(), append(secret, fileLines(t, dir)...))
			if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
				t.Errorf("a refused identity directory was changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestIdentityDirIsAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreate(path, testLogger(t, nil))
	if err == nil || !strings.Contains(err.Error(), "creating identity directory") {
		t.Errorf("error %v, want one about creating the identity directory", err)
	}
}

func raw(name, content string, perm os.FileMode) func(testing.TB, string) {
	return func(tb testing.TB, dir string) { writeRaw(tb, dir, name, content, perm) }
}

func chmod(name string, perm os.FileMode) func(testing.TB, string) {
	return func(tb testing.TB, dir string) {
		if err := os.Chmod(filepath.Join(dir, name), perm); err != nil {
			tb.Fatal(err)
		}
	}
}
