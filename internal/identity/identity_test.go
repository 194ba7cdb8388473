package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var allFiles = []string{WGKeyFile, SigningKeyFile, TLSKeyFile, TLSCertFile}

// testLogger logs to t.Log and, if buf is not nil, to buf.
func testLogger(tb testing.TB, buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb: tb, buf: buf}, nil))
}

type tbWriter struct {
	tb  testing.TB
	buf *bytes.Buffer
}

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	if w.buf != nil {
		w.buf.Write(p)
	}
	return len(p), nil
}

// privateDir is a new directory of mode 0700, as a state directory's
// identity is (t.TempDir's mode depends on the umask).
func privateDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	return dir
}

func mustLoad(tb testing.TB, dir string) *Identity {
	tb.Helper()
	id, err := LoadOrCreate(dir, testLogger(tb, nil))
	if err != nil {
		tb.Fatalf("LoadOrCreate: %v", err)
	}
	return id
}

// publicParts is what must stay the same across loads.
type publicParts struct {
	VPNPubKey     string
	SigningPubKey string
	TLSPubKey     string
	TLSCertPin    string
}

func public(id *Identity) publicParts {
	return publicParts{
		VPNPubKey:     id.VPNPubKey().String(),
		SigningPubKey: base64.StdEncoding.EncodeToString(id.SigningPubKey()),
		TLSPubKey:     base64.StdEncoding.EncodeToString(id.TLSCert.Leaf.PublicKey.(ed25519.PublicKey)),
		TLSCertPin:    hex.EncodeToString(id.TLSCertPin),
	}
}

// secrets returns encodings of id's private keys that must never appear in
// an error or log.
func secrets(tb testing.TB, dir string, id *Identity) []string {
	tb.Helper()
	out := []string{
		id.VPNPrivKey.String(),
		hex.EncodeToString(id.VPNPrivKey[:]),
		base64.StdEncoding.EncodeToString(id.SigningPrivKey.Seed()),
		hex.EncodeToString(id.SigningPrivKey.Seed()),
	}
	if key, ok := id.TLSCert.PrivateKey.(ed25519.PrivateKey); ok {
		out = append(out, base64.StdEncoding.EncodeToString(key.Seed()), hex.EncodeToString(key.Seed()))
	}
	for _, name := range []string{SigningKeyFile, TLSKeyFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		block, _ := pem.Decode(data)
		out = append(out, base64.StdEncoding.EncodeToString(block.Bytes)[20:44])
	}
	return out
}

func checkNoSecrets(tb testing.TB, what, text string, secrets []string) {
	tb.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			tb.Errorf("%s contains private key material %q:\n%s", what, s, text)
		}
	}
}

func TestCreateThenLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity")
	var logs bytes.Buffer
	created, err := LoadOrCreate(dir, testLogger(t, &logs))
	if err != nil {
		t.Fatalf("first LoadOrCreate: %v", err)
	}
	if !strings.Contains(logs.String(), "created identity") {
		t.Errorf("first start logged %q, want \"created identity\"", logs.String())
	}
	loaded, err := LoadOrCreate(dir, testLogger(t, &logs))
	if err != nil {
		t.Fatalf("second LoadOrCreate: %v", err)
	}
	if diff := cmp.Diff(public(created), public(loaded)); diff != "" {
		t.Errorf("public parts after reload (-created +loaded):\n%s", diff)
	}
	if created.VPNPrivKey != loaded.VPNPrivKey || !created.SigningPrivKey.Equal(loaded.SigningPrivKey) {
		t.Error("private keys differ after reload")
	}
	if !bytes.Equal(created.TLSCert.Certificate[0], loaded.TLSCert.Certificate[0]) {
		t.Error("TLS certificate differs after reload")
	}
	if !strings.Contains(logs.String(), "loaded identity") {
		t.Errorf("second start logged %q, want \"loaded identity\"", logs.String())
	}
	if !strings.Contains(logs.String(), created.VPNPubKey().String()) {
		t.Errorf("logs do not show the VPN public key:\n%s", logs.String())
	}
	checkNoSecrets(t, "log", logs.String(), secrets(t, dir, created))
}

func TestFilesAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "identity")
	mustLoad(t, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode = %v, want 0700", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]fs.FileMode{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = info.Mode()
	}
	want := map[string]fs.FileMode{}
	for _, name := range allFiles {
		want[name] = 0o600
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files and modes (-want +got):\n%s", diff)
	}
}

func TestKeysAndCertificate(t *testing.T) {
	dir := privateDir(t)
	id := mustLoad(t, dir)
	leaf := id.TLSCert.Leaf
	if leaf.Subject.CommonName != CertCommonName {
		t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, CertCommonName)
	}
	if validity := leaf.NotAfter.Sub(leaf.NotBefore); validity < 19*365*24*time.Hour {
		t.Errorf("validity %v, want about 20 years", validity)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("certificate is not self-signed: %v", err)
	}
	pin := sha256.Sum256(id.TLSCert.Certificate[0])
	if !bytes.Equal(pin[:], id.TLSCertPin) {
		t.Error("TLSCertPin is not the SHA-256 of the certificate")
	}
	tlsKey := id.TLSCert.PrivateKey.(ed25519.PrivateKey)
	if tlsKey.Equal(id.SigningPrivKey) {
		t.Error("the TLS key is the signing key; they must be separate")
	}
	msg := []byte("registration nonce")
	if !ed25519.Verify(id.SigningPubKey(), msg, ed25519.Sign(id.SigningPrivKey, msg)) {
		t.Error("SigningPubKey does not verify SigningPrivKey's signature")
	}
	raw, err := os.ReadFile(filepath.Join(dir, WGKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(id.VPNPrivKey.String()+"\n", string(raw)); diff != "" {
		t.Errorf("wg.key content is not as `wg genkey` prints it (-want +got):\n%s", diff)
	}
}

func TestWGKeyMatchesWGTool(t *testing.T) {
	wg, err := exec.LookPath("wg")
	if err != nil {
		t.Skip("the wg tool is not installed")
	}
	dir := privateDir(t)
	id := mustLoad(t, dir)
	key, err := os.Open(filepath.Join(dir, WGKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	cmd := exec.Command(wg, "pubkey")
	cmd.Stdin = key
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v", err)
	}
	if diff := cmp.Diff(id.VPNPubKey().String(), strings.TrimSpace(string(out))); diff != "" {
		t.Errorf("public key (-ours +wg pubkey):\n%s", diff)
	}
}

func TestTLSHandshakeWithPin(t *testing.T) {
	server := mustLoad(t, privateDir(t))
	client := mustLoad(t, privateDir(t))
	pinCheck := func(want []byte) func([][]byte, [][]*x509.Certificate) error {
		return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			got := sha256.Sum256(rawCerts[0])
			if !bytes.Equal(got[:], want) {
				return errors.New("pin mismatch")
			}
			return nil
		}
	}
	serverConn, clientConn := net.Pipe()
	defer serverConn.Close()
	defer clientConn.Close()
	srv := tls.Server(serverConn, &tls.Config{
		Certificates:          []tls.Certificate{server.TLSCert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: pinCheck(client.TLSCertPin),
	})
	cli := tls.Client(clientConn, &tls.Config{
		Certificates:          []tls.Certificate{client.TLSCert},
		InsecureSkipVerify:    true, // verified by pin instead
		VerifyPeerCertificate: pinCheck(server.TLSCertPin),
	})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}
