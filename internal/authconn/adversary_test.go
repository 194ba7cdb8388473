package authconn

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
)

// tcpServer accepts connections on a listener and runs handle on each in
// its own goroutine; stop closes the listener and every connection and waits
// for the goroutines. It is the skeleton of the adversaries below.
type tcpServer struct {
	lis   net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	once  sync.Once
}

func serveTCP(t testing.TB, lis net.Listener, handle func(net.Conn)) *tcpServer {
	t.Helper()
	s := &tcpServer{lis: lis}
	s.wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			s.track(conn)
			s.wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(testTimeout))
				handle(conn)
			})
		}
	})
	t.Cleanup(s.stop)
	return s
}

// track remembers conn so that stop can close it.
func (s *tcpServer) track(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns = append(s.conns, conn)
}

func (s *tcpServer) stop() {
	s.once.Do(func() {
		s.lis.Close()
		s.mu.Lock()
		for _, conn := range s.conns {
			conn.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// serverTLSConfig is the TLS configuration of an adversary posing as a
// fabric server with its own certificate.
func serverTLSConfig(t testing.TB) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{newCert(t, "adversary")}, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
}

// rawTLSDial opens a TLS connection the way an authconn client does, without
// the proof exchange.
func rawTLSDial(t testing.TB, addr string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// fakeServer speaks the fabric handshake with its own certificate and
// without the bootstrap key: it answers every hello with answer(hello, ekm).
// It records how many bytes each client sent after the answer.
type fakeServer struct {
	*tcpServer
	addr       string
	mu         sync.Mutex
	extraBytes []int64
}

func startFakeServer(t testing.TB, answer func(h hello, ekm []byte) reply) *fakeServer {
	t.Helper()
	return startFakeServerOn(t, listen(t), answer)
}

func startFakeServerOn(t testing.TB, lis net.Listener, answer func(h hello, ekm []byte) reply) *fakeServer {
	t.Helper()
	f := &fakeServer{addr: lis.Addr().String()}
	cfg := serverTLSConfig(t)
	f.tcpServer = serveTCP(t, lis, func(rawConn net.Conn) {
		conn := tls.Server(rawConn, cfg)
		if err := conn.Handshake(); err != nil {
			return
		}
		ekm, err := exportedKey(conn.ConnectionState())
		if err != nil {
			return
		}
		var h hello
		if err := readMessage(conn, &h); err != nil {
			return
		}
		if err := writeMessage(conn, answer(h, ekm)); err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, conn)
		f.mu.Lock()
		f.extraBytes = append(f.extraBytes, n)
		f.mu.Unlock()
	})
	return f
}

// assertClientSentNothing stops f and fails if a client sent any byte (an
// HTTP/2 preface, a request) after the fake server's answer.
func (f *fakeServer) assertClientSentNothing(t testing.TB) {
	t.Helper()
	f.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.extraBytes) == 0 {
		t.Fatal("no client completed a hello with the fake server")
	}
	for _, n := range f.extraBytes {
		if n != 0 {
			t.Errorf("client sent %d bytes after the fake server's answer, want 0", n)
		}
	}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFakeServer(t *testing.T) {
	checkGoroutineLeaks(t)
	const notProven = "peer %s did not prove the bootstrap key (not a peer of this cluster, or a man-in-the-middle)"
	garbage := randomBytes(t, 32)
	tests := []struct {
		name    string
		answer  func(h hello, ekm []byte) reply
		wantMsg string
	}{
		{name: "garbage proof", answer: func(hello, []byte) reply { return reply{V: 1, OK: true, Proof: garbage} }, wantMsg: notProven},
		{name: "no proof", answer: func(hello, []byte) reply { return reply{V: 1, OK: true} }, wantMsg: notProven},
		{name: "client proof echoed", answer: func(h hello, _ []byte) reply { return reply{V: 1, OK: true, Proof: h.Proof} }, wantMsg: notProven},
		{name: "other protocol version", answer: func(hello, []byte) reply { return reply{V: 2, OK: true, Proof: garbage} },
			wantMsg: "peer %s answered with unsupported protocol version 2"},
		{name: "hostile refusal reason", answer: func(hello, []byte) reply { return reply{V: 1, Reason: "no\x1b[31m \"way\"\n"} },
			wantMsg: "peer %s refused our credentials: no31m way"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := startFakeServer(t, tc.answer)
			_, err := check(t, dial(t, fake.addr, ClientConfig{BootstrapKey: newKey(t)}))
			assertStatus(t, err, codes.PermissionDenied, tc.wantMsg, fake.addr)
			fake.assertClientSentNothing(t)
		})
	}
}

// relayMode is what a relay between a client and a real server does.
type relayMode int

const (
	relayBytes       relayMode = iota // forward TCP bytes, no TLS termination
	relayMessages                     // terminate TLS on both sides, forward hello and reply
	relayForgeAccept                  // like relayMessages, but tell the client it was accepted
)

// startRelay listens on a new port and relays every connection to serverAddr.
func startRelay(t testing.TB, serverAddr string, mode relayMode) string {
	t.Helper()
	lis := listen(t)
	cfg := serverTLSConfig(t)
	serveTCP(t, lis, func(clientConn net.Conn) {
		serverConn, err := net.Dial("tcp", serverAddr)
		if err != nil {
			return
		}
		defer serverConn.Close()
		_ = serverConn.SetDeadline(time.Now().Add(testTimeout))
		if mode == relayBytes {
			pipe(clientConn, serverConn)
			return
		}
		relayHandshake(tls.Server(clientConn, cfg), tls.Client(serverConn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}), mode)
	})
	return lis.Addr().String()
}

// relayHandshake terminates TLS on both sides and passes the hello and the
// reply through, then the rest of the traffic.
func relayHandshake(clientConn, serverConn *tls.Conn, mode relayMode) {
	if clientConn.Handshake() != nil || serverConn.Handshake() != nil {
		return
	}
	var h hello
	if readMessage(clientConn, &h) != nil || writeMessage(serverConn, h) != nil {
		return
	}
	var r reply
	if readMessage(serverConn, &r) != nil {
		return
	}
	if mode == relayForgeAccept {
		r = reply{V: 1, OK: true, Proof: r.Proof}
	}
	if writeMessage(clientConn, r) != nil {
		return
	}
	pipe(clientConn, serverConn)
}

// pipe copies between a and b until either side ends, then closes both.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	copyAndClose := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		a.Close()
		b.Close()
	}
	wg.Go(func() { copyAndClose(a, b) })
	wg.Go(func() { copyAndClose(b, a) })
	wg.Wait()
}

func TestMITM(t *testing.T) {
	checkGoroutineLeaks(t)
	key := newKey(t)
	adminKey := newSigningKey(t)
	lookup := func(ed25519.PublicKey) (string, error) { return "admin", nil }
	tests := []struct {
		name       string
		mode       relayMode
		signing    bool
		wantCode   codes.Code
		wantMsg    string // format with the relay endpoint
		wantLog    string
		wantCalled bool
	}{
		{name: "byte relay without TLS termination works", mode: relayBytes, wantCalled: true},
		{name: "relayed hello and reply", mode: relayMessages, wantCode: codes.PermissionDenied,
			wantMsg: "peer %s refused our credentials: bootstrap key mismatch", wantLog: reasonBootstrapMismatch},
		{name: "relayed hello, forged acceptance", mode: relayForgeAccept, wantCode: codes.PermissionDenied,
			wantMsg: "peer %s did not prove the bootstrap key (not a peer of this cluster, or a man-in-the-middle)", wantLog: reasonBootstrapMismatch},
		{name: "signing key client", mode: relayMessages, signing: true, wantCode: codes.PermissionDenied,
			wantMsg: "peer %s: server certificate does not match the pinned certificate"},
		{name: "signing key client, byte relay works", mode: relayBytes, signing: true, wantCalled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, ServerConfig{BootstrapKey: key, LookupSigningKey: lookup})
			relayAddr := startRelay(t, ts.addr, tc.mode)
			cfg := ClientConfig{BootstrapKey: key}
			if tc.signing {
				cfg = ClientConfig{SigningPrivKey: adminKey, ServerCertPin: ts.pin()}
			}
			_, err := check(t, dial(t, relayAddr, cfg))
			assertStatus(t, err, tc.wantCode, tc.wantMsg, relayAddr)
			if called := len(ts.health.Calls()) > 0; called != tc.wantCalled {
				t.Errorf("handler called = %v, want %v", called, tc.wantCalled)
			}
			if tc.wantLog != "" {
				waitForLog(t, ts.logs, tc.wantLog)
			}
		})
	}
}

// honestSession runs the bootstrap handshake by hand, as a legitimate client,
// and returns the hello and reply an eavesdropper holding the session's
// traffic could record.
func honestSession(t testing.TB, addr string, key []byte) (hello, reply) {
	t.Helper()
	conn := rawTLSDial(t, addr)
	defer conn.Close()
	ekm, err := exportedKey(conn.ConnectionState())
	if err != nil {
		t.Fatal(err)
	}
	h := hello{V: 1, Method: MethodBootstrap, Proof: bootstrapProof(key, labelClientMAC, ekm)}
	if err := writeMessage(conn, h); err != nil {
		t.Fatal(err)
	}
	var r reply
	if err := readMessage(conn, &r); err != nil {
		t.Fatal(err)
	}
	if !r.OK {
		t.Fatalf("honest session refused: %q", r.Reason)
	}
	return h, r
}

func TestReplay(t *testing.T) {
	checkGoroutineLeaks(t)
	key := newKey(t)
	ts := startServer(t, ServerConfig{BootstrapKey: key})
	recordedHello, recordedReply := honestSession(t, ts.addr, key)

	t.Run("client proof replayed to the server", func(t *testing.T) {
		conn := rawTLSDial(t, ts.addr)
		if err := writeMessage(conn, recordedHello); err != nil {
			t.Fatal(err)
		}
		var got reply
		if err := readMessage(conn, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(reply{V: 1, Reason: reasonBootstrapMismatch}, got); diff != "" {
			t.Errorf("reply to a replayed hello (-want +got):\n%s", diff)
		}
		if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read after refusal = %v, want the server to close the connection", err)
		}
		if calls := ts.health.Calls(); len(calls) != 0 {
			t.Errorf("handler ran %d times", len(calls))
		}
	})
	t.Run("server proof replayed to the client", func(t *testing.T) {
		fake := startFakeServer(t, func(hello, []byte) reply { return recordedReply })
		_, err := check(t, dial(t, fake.addr, ClientConfig{BootstrapKey: key}))
		assertStatus(t, err, codes.PermissionDenied,
			"peer %s did not prove the bootstrap key (not a peer of this cluster, or a man-in-the-middle)", fake.addr)
		fake.assertClientSentNothing(t)
	})
}
