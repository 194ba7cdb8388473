package authconn

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Fixed keys of the fuzz targets, so that their corpora replay.
var (
	fuzzBootstrapKey = sha256Of([]byte("fuzz bootstrap key"))
	fuzzSigningKey   = ed25519.NewKeyFromSeed(sha256Of([]byte("fuzz signing key")))
	fuzzEKM          = sha256Of([]byte("fuzz exporter value"))
)

// fuzzServer accepts the bootstrap key and one signing key.
func fuzzServer(tb testing.TB) *serverCredentials {
	tb.Helper()
	cert, err := NewSelfSignedCertificate(ed25519.NewKeyFromSeed(sha256Of([]byte("fuzz cert key"))), "fuzz")
	if err != nil {
		tb.Fatal(err)
	}
	known := fuzzSigningKey.Public().(ed25519.PublicKey)
	creds, err := NewServerCredentials(ServerConfig{
		Certificate: cert, BootstrapKey: fuzzBootstrapKey, HandshakeTimeout: 5 * time.Second,
		LookupSigningKey: func(pub ed25519.PublicKey) (string, error) {
			if pub.Equal(known) {
				return "admin", nil
			}
			return "", errors.New("unknown")
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return creds.(*serverCredentials)
}

// helloValid is the oracle of the server's decision: whether h proves a
// credential the fuzz server accepts over ekm.
func helloValid(h hello, ekm []byte) bool {
	if h.V != protocolVersion {
		return false
	}
	switch h.Method {
	case MethodBootstrap:
		return hmac.Equal(h.Proof, bootstrapProof(fuzzBootstrapKey, labelClientMAC, ekm))
	case MethodSignature:
		return bytes.Equal(h.PubKey, fuzzSigningKey.Public().(ed25519.PublicKey)) && len(h.Proof) == ed25519.SignatureSize &&
			ed25519.Verify(ed25519.PublicKey(h.PubKey), signedMessage(ekm), h.Proof)
	}
	return false
}

// fuzzHello builds a hello from fuzzed fields; with prove, its proof is
// the right one for its method over ekm.
func fuzzHello(v int, method string, pubKey, proof []byte, prove bool, ekm []byte) hello {
	h := hello{V: v, Method: method, PubKey: pubKey, Proof: proof}
	if prove {
		switch method {
		case MethodBootstrap:
			h.Proof = bootstrapProof(fuzzBootstrapKey, labelClientMAC, ekm)
		case MethodSignature:
			h.Proof = ed25519.Sign(fuzzSigningKey, signedMessage(ekm))
			if len(pubKey) == 0 {
				h.PubKey = fuzzSigningKey.Public().(ed25519.PublicKey)
			}
		}
	}
	return h
}

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// FuzzWireMessage: any bytes read as a hello or a reply either fail to
// read (malformed, or too short) or decode to a message that writes back
// to one that reads the same; the server accepts a hello exactly when it
// proves a credential, and the client accepts a reply only when it says
// ok and proves the bootstrap key.
func FuzzWireMessage(f *testing.F) {
	f.Add(frame([]byte(`{"v":1,"method":"bootstrap-hmac","proof":"AAAA"}`)))
	f.Add(frame([]byte(`{"v":1,"method":"ed25519","pubKey":"AAAA","proof":"AAAA"}`)))
	f.Add(frame([]byte(`{"v":1,"ok":true,"proof":"AAAA"}`)))
	f.Add(frame([]byte(`{"v":1,"ok":false,"reason":"bootstrap key mismatch\n\u001b[31m"}`)))
	f.Add(frame([]byte(`{"v":2}`)))
	f.Add(frame([]byte(`{"v":1,"method":"ed25519","v":1}`)))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, '{'})
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	s := fuzzServer(f)
	client := &ClientCredentials{cfg: ClientConfig{BootstrapKey: fuzzBootstrapKey}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h hello
		if err := readMessage(bytes.NewReader(data), &h); err == nil {
			info, rej := s.verify(h, fuzzEKM)
			if (rej == nil) != helloValid(h, fuzzEKM) {
				t.Fatalf("server decided %v (info %+v) for hello %+v; the oracle says %v", rej, info, h, helloValid(h, fuzzEKM))
			}
			roundTrip(t, h)
		}
		var r reply
		if err := readMessage(bytes.NewReader(data), &r); err == nil {
			err := client.checkReply(r, fuzzEKM, "192.0.2.1:7443")
			want := r.V == protocolVersion && r.OK && hmac.Equal(r.Proof, bootstrapProof(fuzzBootstrapKey, labelServerMAC, fuzzEKM))
			if (err == nil) != want {
				t.Fatalf("client decided %v for reply %+v, want acceptance %v", err, r, want)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\n\r\x1b") {
				t.Fatalf("client error %q carries control characters of the server's reason", err)
			}
			roundTrip(t, r)
		}
	})
}

// roundTrip checks that m writes to a message that reads back the same.
func roundTrip[M any](t *testing.T, m M) {
	t.Helper()
	var buf bytes.Buffer
	if err := writeMessage(&buf, m); err != nil {
		return // over the size limit once encoded: the sender refuses it
	}
	var again M
	if err := readMessage(&buf, &again); err != nil {
		t.Fatalf("%+v written does not read back: %v", m, err)
	}
	if diff := cmp.Diff(m, again); diff != "" {
		t.Fatalf("message written and read back differs (-written +read):\n%s", diff)
	}
}

// FuzzServerHandshake runs the real server handshake (TLS 1.3 over
// loopback TCP) against a client that sends, once TLS is up, either the fuzzed
// bytes as they are or a hello made of the fuzzed fields (framed, its
// proof made right over the session's exporter value with prove). The
// server must end every handshake, and accept exactly the hellos that
// prove a credential.
func FuzzServerHandshake(f *testing.F) {
	f.Add(false, []byte(`{"v":1}`), 1, MethodBootstrap, []byte(nil), []byte(nil), true)
	f.Add(false, []byte(nil), 1, MethodBootstrap, []byte(nil), []byte("a wrong proof"), false)
	f.Add(false, []byte(nil), 1, MethodSignature, []byte(nil), []byte(nil), true)
	f.Add(false, []byte(nil), 1, MethodSignature, bytes.Repeat([]byte{7}, 32), []byte(nil), true)
	f.Add(false, []byte(nil), 2, MethodBootstrap, []byte(nil), []byte(nil), true)
	f.Add(false, []byte(nil), 1, "none", []byte(nil), []byte(nil), true)
	f.Add(true, frame([]byte(`{"v":1,"method":"bootstrap-hmac","proof":"AAAA"}`)), 0, "", []byte(nil), []byte(nil), false)
	f.Add(true, []byte{0, 0, 0x10, 1}, 0, "", []byte(nil), []byte(nil), false)
	f.Add(true, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, "", []byte(nil), []byte(nil), false)
	s := fuzzServer(f)
	// Loopback TCP, not net.Pipe: the TLS 1.3 server writes its session
	// tickets while the client writes its hello, which an unbuffered pipe
	// deadlocks.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { lis.Close() })
	f.Fuzz(func(t *testing.T, raw bool, data []byte, v int, method string, pubKey, proof []byte, prove bool) {
		clientConn, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		serverConn, err := lis.Accept()
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			info *AuthInfo
			err  error
		}
		done := make(chan result, 1)
		go func() {
			conn, info, err := s.ServerHandshake(serverConn)
			if conn != nil {
				conn.Close()
			}
			ai, _ := info.(*AuthInfo)
			done <- result{ai, err}
		}()
		tlsConn := tls.Client(clientConn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
		defer tlsConn.Close()
		if err := tlsConn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := tlsConn.Handshake(); err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		ekm, err := exportedKey(tlsConn.ConnectionState())
		if err != nil {
			t.Fatal(err)
		}
		var h hello
		var valid bool
		if !raw {
			h = fuzzHello(v, method, pubKey, proof, prove, ekm)
			var buf bytes.Buffer
			if err := writeMessage(&buf, h); err != nil {
				return // over the size limit: no client sends it
			}
			data, valid = buf.Bytes(), helloValid(h, ekm)
		}
		// The server may answer before it read everything, or wait for
		// bytes that never come: write, end the writing (close_notify),
		// read its answer.
		go func() {
			_, _ = tlsConn.Write(data)
			_ = tlsConn.CloseWrite()
			var r reply
			_ = readMessage(tlsConn, &r)
			tlsConn.Close()
		}()
		var res result
		select {
		case res = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the server handshake did not end")
		}
		if raw {
			// Raw bytes may hold a valid hello only by chance; the
			// server's decision must then match the oracle on what it read.
			if res.err == nil && !helloValid(readHello(t, data), ekm) {
				t.Fatalf("server accepted raw bytes %q that prove nothing", data)
			}
			return
		}
		if (res.err == nil) != valid {
			t.Fatalf("server handshake = %+v, %v for hello %+v; the oracle says valid = %v", res.info, res.err, h, valid)
		}
		if res.err == nil && h.Method == MethodSignature && !bytes.Equal(res.info.PeerSigningPubKey, h.PubKey) {
			t.Fatalf("server accepted key %x, the hello has %x", res.info.PeerSigningPubKey, h.PubKey)
		}
	})
}

func readHello(t *testing.T, data []byte) hello {
	t.Helper()
	var h hello
	if err := readMessage(bytes.NewReader(data), &h); err != nil {
		t.Fatalf("server accepted bytes that do not read as a hello: %v", err)
	}
	return h
}
