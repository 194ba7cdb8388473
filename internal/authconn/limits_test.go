package authconn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// halfOpen connects to addr from source (a 127.0.0.x address) and sends
// nothing, as a client that never starts its TLS handshake.
func halfOpen(t *testing.T, source, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: testTimeout}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// closedByServer reports whether the server closed conn (within the test
// timeout) without sending anything.
func closedByServer(t *testing.T, conn net.Conn) bool {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := conn.Read(make([]byte, 1))
	return n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err))
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

// waitPending waits until the server counts total handshakes in progress,
// fromIP of them from ip.
func (ts *testServer) waitPending(t *testing.T, ip string, total, fromIP int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		gotTotal, gotIP := ts.creds.pending.counts(ip)
		if gotTotal == total && gotIP == fromIP {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshakes in progress: %d, %d from %s; want %d, %d", gotTotal, gotIP, ip, total, fromIP)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPendingHandshakesPerIP: a source at its cap of handshakes in
// progress gets its next connections closed before any TLS byte; other
// sources are not affected, and the source is admitted again once one of
// its handshakes ends.
func TestPendingHandshakesPerIP(t *testing.T) {
	key := newKey(t)
	ts := startServer(t, ServerConfig{BootstrapKey: key, MaxPendingHandshakesPerIP: 3})
	var held []net.Conn
	for range 3 {
		held = append(held, halfOpen(t, "127.0.0.2", ts.addr))
	}
	ts.waitPending(t, "127.0.0.2", 3, 3)
	if extra := halfOpen(t, "127.0.0.2", ts.addr); !closedByServer(t, extra) {
		t.Error("a fourth connection from 127.0.0.2 was not closed")
	}
	waitForLog(t, ts.logs, "authconn: rejected connection", "remote=127.0.0.2:", `reason="too many handshakes in progress from this address"`)
	// Another source gets in meanwhile (the client dials from 127.0.0.1).
	if _, err := check(t, dial(t, ts.addr, ClientConfig{BootstrapKey: key})); err != nil {
		t.Errorf("a client from another address during the flood: %v", err)
	}
	held[0].Close()
	ts.waitPending(t, "127.0.0.2", 2, 2)
	halfOpen(t, "127.0.0.2", ts.addr)
	ts.waitPending(t, "127.0.0.2", 3, 3)
}

// TestPendingHandshakesTotal: over the total cap, a handshake in progress
// makes room for the newcomer, so a real client gets through a flood: the
// oldest once it has been in progress for the eviction age, before that
// the oldest of a source with several in progress. When every handshake
// in progress is young and alone from its source (a reconnect storm of
// real clients, which dropping the oldest at once turned into a
// livelock), the newcomer is refused at once and the others go on.
func TestPendingHandshakesTotal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sources    []int // last byte of the four held connections' 127.0.0.x, in order
		evictAfter time.Duration
		wait       time.Duration // after the four, before the newcomer
		dropped    int           // the held connection dropped for the newcomer, -1: it is refused
		wantLog    string
	}{
		{name: "oldest past the eviction age", sources: []int{10, 11, 12, 13}, evictAfter: 100 * time.Millisecond, wait: 200 * time.Millisecond,
			dropped: 0, wantLog: `reason="dropped for a newer connection: too many handshakes in progress"`},
		{name: "a source with several", sources: []int{11, 10, 10, 12}, evictAfter: time.Hour,
			dropped: 1, wantLog: `reason="dropped for a newer connection: too many handshakes in progress"`},
		{name: "all younger and alone", sources: []int{10, 11, 12, 13}, evictAfter: time.Hour,
			dropped: -1, wantLog: `reason="too many handshakes in progress"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := newKey(t)
			ts := startServer(t, ServerConfig{BootstrapKey: key, MaxPendingHandshakes: 4, EvictAfter: tc.evictAfter})
			var held []net.Conn
			for i, src := range tc.sources {
				held = append(held, halfOpen(t, fmt.Sprintf("127.0.0.%d", src), ts.addr))
				ts.waitPending(t, "", i+1, 0) // one at a time: their order is known
			}
			time.Sleep(tc.wait)
			_, err := check(t, dial(t, ts.addr, ClientConfig{BootstrapKey: key}))
			if admitted := tc.dropped >= 0; admitted != (err == nil) {
				t.Fatalf("a client when the cap is full: %v, want admitted %v", err, admitted)
			}
			if tc.dropped < 0 {
				// The four go on: none was dropped for the newcomer.
				ts.waitPending(t, "", 4, 0)
				waitForLog(t, ts.logs, "remote=127.0.0.1:", tc.wantLog)
				return
			}
			if !closedByServer(t, held[tc.dropped]) {
				t.Errorf("held connection %d was not dropped", tc.dropped)
			}
			waitForLog(t, ts.logs, fmt.Sprintf("remote=127.0.0.%d:", tc.sources[tc.dropped]), tc.wantLog)
			// The three others are still in progress.
			ts.waitPending(t, "", 3, 0)
		})
	}
}

// TestRejectionLogSampled is the regression test of the log part of defect
// 6 of issue 9: 3,000 garbage connections wrote 3,000 log lines. Now the
// first few of a window are logged one by one and the others counted.
func TestRejectionLogSampled(t *testing.T) {
	var buf lockedBuffer
	l := newRejectionLog(slog.New(slog.NewTextHandler(&buf, nil)))
	l.window = 50 * time.Millisecond
	for i := range 300 {
		l.rejected(fmt.Sprintf("192.0.2.%d:4000", i%250), "tls handshake failed", errors.New("EOF"))
	}
	l.rejected("192.0.2.7:4000", "bootstrap key mismatch", nil)
	waitForLog(t, &buf, "authconn: more rejected connections, not logged one by one", `reason="tls handshake failed"`, "count=295", "logged=5", "window=50ms", "lastRemote=192.0.2.49:4000")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var one, tls int
	for _, line := range lines {
		switch {
		case strings.Contains(line, `msg="authconn: rejected connection"`) && strings.Contains(line, "tls handshake failed"):
			tls++
		case strings.Contains(line, "bootstrap key mismatch"):
			one++
		}
	}
	if tls != 5 || one != 1 || len(lines) != 7 {
		t.Errorf("%d lines, %d of tls handshakes and %d of the key; want 7, 5 and 1:\n%s", len(lines), tls, one, buf.String())
	}
	// A new window logs again.
	l.rejected("192.0.2.8:4000", "tls handshake failed", nil)
	if !bytes.Contains([]byte(buf.String()), []byte("remote=192.0.2.8:4000")) {
		t.Error("the next window logged nothing")
	}
}
