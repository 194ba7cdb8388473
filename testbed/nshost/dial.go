package nshost

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialContext opens a TCP connection from inside h's network namespace, so
// that a test can call a service on the VPN as a program on h would. Only
// the socket is made in h's namespace. It suits grpc.WithContextDialer.
func (h *Host) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNamespace(func() (err error) {
		// net.Dialer makes the socket on this thread; the connect
		// completes through the poller, whatever the thread.
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("dialing %s from %s: %w", addr, h.Name(), err)
	}
	return c, nil
}

// inNamespace runs fn on a thread that is in h's network namespace, for
// calls that make sockets (a socket stays in the namespace it was made in).
// fn runs on a goroutine of its own whose thread is thrown away if it
// cannot return to the original namespace.
func (h *Host) inNamespace(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- runIn(netnsPath(h.ns), fn) }()
	return <-done
}

func runIn(nsPath string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering the namespace: %w", err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and ends with this goroutine.
		return fmt.Errorf("leaving the namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// DialManyFrom opens n TCP connections to addr from source, in h's
// namespace, one after the other, and returns those that connected. It
// stops at the first failure to connect, and returns the connections made
// with that error.
func (h *Host) DialManyFrom(ctx context.Context, source netip.Addr, addr string, n int) ([]net.Conn, error) {
	var conns []net.Conn
	err := h.inNamespace(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: source.AsSlice()}}
		for range n {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("dialing %s from %s on %s (%d connected): %w", addr, source, h.Name(), len(conns), err)
	}
	return conns, err
}
