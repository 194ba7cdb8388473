// Package tcpkeepalive has the kernel watch the peer of a TCP connection:
// it probes the peer when the connection has been idle for a while, and
// it gives the connection up when the probes, or what was sent, go
// unanswered for too long (TCP_USER_TIMEOUT). The process is not woken
// for any of it: a long-lived, mostly idle connection (a node's watch)
// learns that its peer vanished, with its machine, its network or its
// WireGuard interface, as a read error, without a message or an HTTP/2
// PING every few seconds from either end.
package tcpkeepalive

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Config is how the kernel watches a connection's peer.
type Config struct {
	// Idle is how long the connection receives nothing before the first
	// probe.
	Idle time.Duration
	// Interval is the time between two probes.
	Interval time.Duration
	// DeadAfter gives the connection up when nothing was received for
	// that long and a probe is unanswered, or when something sent is
	// unacknowledged for that long (TCP_USER_TIMEOUT). It is at least
	// Idle plus one Interval.
	DeadAfter time.Duration
	// ReceiveBuffer, if set, is what the socket may hold unread (its
	// SO_RCVBUF, forced past net.core.rmem_max when the process may). A
	// peer that stops reading long enough to close its TCP window is
	// given up after DeadAfter like a dead one, though its kernel answers:
	// the end that is slow to read holds what its peer's protocol sends
	// unacknowledged (a gRPC flow-control window) so that its window never
	// closes. Without the privilege, the kernel's own tuning is kept.
	ReceiveBuffer int
}

// netConner is a connection that wraps another (tls.Conn, counting
// wrappers of tests).
type netConner interface{ NetConn() net.Conn }

// Set makes the kernel watch the peer of conn, a TCP connection or one
// that wraps it (NetConn). Any other connection is an error: nothing
// would notice its peer vanish.
func (c Config) Set(conn net.Conn) error {
	if c.DeadAfter < c.Idle+c.Interval {
		return fmt.Errorf("tcp keepalive: DeadAfter %v is less than Idle %v plus Interval %v", c.DeadAfter, c.Idle, c.Interval)
	}
	raw := conn
	for {
		w, ok := raw.(netConner)
		if !ok {
			break
		}
		raw = w.NetConn()
	}
	tcp, ok := raw.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("tcp keepalive: %T is not a TCP connection, so nothing would notice its peer vanish", raw)
	}
	if err := tcp.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: c.Idle, Interval: c.Interval, Count: probes(c)}); err != nil {
		return fmt.Errorf("tcp keepalive: %w", err)
	}
	sc, err := tcp.SyscallConn()
	if err != nil {
		return fmt.Errorf("tcp keepalive: %w", err)
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(c.DeadAfter.Milliseconds()))
	}); err != nil {
		return fmt.Errorf("tcp keepalive: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("tcp keepalive: setting TCP_USER_TIMEOUT: %w", serr)
	}
	if c.ReceiveBuffer > 0 {
		// The kernel doubles the value for its bookkeeping; an unforced
		// SO_RCVBUF would cap it at rmem_max and end the autotuning, so
		// without CAP_NET_ADMIN nothing is set.
		if err := sc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, c.ReceiveBuffer)
		}); err != nil {
			return fmt.Errorf("tcp keepalive: %w", err)
		}
		if serr != nil && !errors.Is(serr, unix.EPERM) {
			return fmt.Errorf("tcp keepalive: setting SO_RCVBUFFORCE: %w", serr)
		}
	}
	return nil
}

// probes is how many probes fit between Idle and DeadAfter. With a user
// timeout, Linux gives the connection up at the first probe interval
// that ends past DeadAfter, whatever the count; the count matters only to
// a kernel that ignores the user timeout for probes.
func probes(c Config) int {
	return max(1, int((c.DeadAfter-c.Idle)/c.Interval))
}

// Dialer returns dial with the kernel watching every connection it
// opens.
func (c Config) Dialer(dial func(ctx context.Context, addr string) (net.Conn, error)) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		if err := c.Set(conn); err != nil {
			conn.Close()
			return nil, fmt.Errorf("dialing %s: %w", addr, err)
		}
		return conn, nil
	}
}

// Listener returns lis with the kernel watching the peer of every
// connection it accepts; lis must be a TCP listener.
func (c Config) Listener(lis net.Listener) (net.Listener, error) {
	if _, ok := lis.Addr().(*net.TCPAddr); !ok {
		return nil, fmt.Errorf("tcp keepalive: %s is not a TCP listener", lis.Addr())
	}
	return listener{Listener: lis, cfg: c}, nil
}

type listener struct {
	net.Listener
	cfg Config
}

// Accept implements net.Listener. A connection whose options cannot be
// set (reset as it was accepted) is closed and the next one accepted: one
// peer's failure is not the listener's, and gRPC stops serving on an
// Accept error.
func (l listener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := l.cfg.Set(conn); err != nil {
			conn.Close()
			continue
		}
		return conn, nil
	}
}
