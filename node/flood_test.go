package node

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
)

// logBuffer is a log destination a test reads while the daemon writes.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestGarbageConnectionsBounded is the regression test of defect 6 of
// issue 9 at the pubapi: 3,000 garbage connections wrote 3,000 WARN lines
// (633 kB). Now the log holds a few of them (and a count of the others when
// its window ends), and the peer answers throughout.
func TestGarbageConnectionsBounded(t *testing.T) {
	var logs logBuffer
	td := newTestDaemon(t)
	td.log = slog.New(slog.NewTextHandler(&logs, nil))
	stop, err := td.start()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for i := range 3000 {
		c, err := net.Dial("tcp", td.endpoint)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n")) // not a TLS client hello
		c.Close()
	}
	if resp, err := td.getState(); err != nil || resp.GetState() != "accepting-init" {
		t.Fatalf("GetState after the garbage: %v, %v", resp, err)
	}
	var rejected, total int
	for _, line := range strings.Split(logs.String(), "\n") {
		total += len(line) + 1
		if strings.Contains(line, `msg="authconn: rejected connection"`) {
			rejected++
		}
	}
	// Per reason (tls handshake failed, too many from this address), 5
	// lines per 10 s window.
	if rejected == 0 || rejected > 10 || total > 8<<10 {
		t.Errorf("%d rejection lines, %d bytes of log for 3000 garbage connections; want at most 10 lines:\n%s", rejected, total, logs.String())
	}
}
