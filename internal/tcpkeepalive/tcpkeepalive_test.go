package tcpkeepalive_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/tcpkeepalive"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// sockopts is what the kernel holds for a connection.
type sockopts struct {
	KeepAlive, Idle, Interval, Count, UserTimeoutMs int
}

func optsOf(t *testing.T, conn net.Conn) sockopts {
	t.Helper()
	sc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var o sockopts
	var gerr error
	get := func(fd, level, opt int) int {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil && gerr == nil {
			gerr = err
		}
		return v
	}
	if err := sc.Control(func(fd uintptr) {
		f := int(fd)
		o = sockopts{
			KeepAlive:     get(f, unix.SOL_SOCKET, unix.SO_KEEPALIVE),
			Idle:          get(f, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE),
			Interval:      get(f, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL),
			Count:         get(f, unix.IPPROTO_TCP, unix.TCP_KEEPCNT),
			UserTimeoutMs: get(f, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT),
		}
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return o
}

// wrapped is a connection wrapping another, as tls.Conn does.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// listen returns a loopback TCP listener wrapped by cfg, closed at the
// test's end.
func listen(t *testing.T, cfg tcpkeepalive.Config) net.Listener {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	lis, err := cfg.Listener(raw)
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// TestDialerAndListener: both ends of a connection, dialled and accepted,
// carry the configured probes and user timeout.
func TestDialerAndListener(t *testing.T) {
	cfg := tcpkeepalive.Config{Idle: 10 * time.Second, Interval: time.Second, DeadAfter: 13 * time.Second}
	want := sockopts{KeepAlive: 1, Idle: 10, Interval: 1, Count: 3, UserTimeoutMs: 13000}
	lis := listen(t, cfg)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	var plain net.Dialer
	dial := cfg.Dialer(func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := plain.DialContext(ctx, "tcp", addr)
		return wrapped{c}, err
	})
	c, err := dial(context.Background(), lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	for _, tc := range []struct {
		name string
		conn net.Conn
	}{{"dialled", c.(wrapped).Conn}, {"accepted", s}} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(want, optsOf(t, tc.conn)); diff != "" {
				t.Errorf("socket options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	cfg := tcpkeepalive.Config{Idle: 10 * time.Second, Interval: time.Second, DeadAfter: 13 * time.Second}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"not TCP", cfg.Set(a), "not a TCP connection"},
		{"DeadAfter too short", tcpkeepalive.Config{Idle: 10 * time.Second, Interval: time.Second, DeadAfter: 5 * time.Second}.Set(a), "less than Idle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", tc.err, tc.want)
			}
		})
	}
	unixLis, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer unixLis.Close()
	if _, err := cfg.Listener(unixLis); err == nil || !strings.Contains(err.Error(), "not a TCP listener") {
		t.Errorf("Listener(unix): got %v, want not a TCP listener", err)
	}
}

// TestSlowReader: a peer that reads nothing while its peer sends a
// bounded amount (a flow-control window, 1 MiB) is kept when its socket
// holds that much unread, and given up after DeadAfter when its TCP window
// closes, as a dead one is.
func TestSlowReader(t *testing.T) {
	const window = 1 << 20
	for _, tc := range []struct {
		name          string
		receiveBuffer int
		wantErr       bool
	}{
		{"holds a window", 2 * window, false},
		{"window closes", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tcpkeepalive.Config{Idle: time.Second, Interval: time.Second, DeadAfter: 2 * time.Second}
			lis := listen(t, cfg)
			reader := cfg
			reader.ReceiveBuffer = tc.receiveBuffer
			var plain net.Dialer
			c, err := reader.Dialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return plain.DialContext(ctx, "tcp", addr)
			})(context.Background(), lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close() // never read
			s, err := lis.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The window is written at once; then the sender waits
			// twice DeadAfter with nothing more to send, as gRPC waits
			// for a window update, and tries one byte more.
			if err := s.SetWriteDeadline(time.Now().Add(3 * cfg.DeadAfter)); err != nil {
				t.Fatal(err)
			}
			_, err = s.Write(make([]byte, window))
			if err == nil {
				time.Sleep(2 * cfg.DeadAfter)
				_, err = s.Write([]byte{0})
			}
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Errorf("sending to a reader that reads nothing: %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}
