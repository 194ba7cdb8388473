package nshost

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialContext opens a TCP connection from inside h's network namespace, so
// that a test can call a service on the VPN as a program on h would. Only
// the socket is made in h's namespace: the calling thread enters it, makes
// the socket and comes back. It suits grpc.WithContextDialer.
func (h *Host) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	// The dial runs on a goroutine of its own whose thread is thrown away
	// if it cannot return to the original namespace.
	go func() {
		c, err := dialIn(ctx, netnsPath(h.ns), addr)
		done <- result{c, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("dialing %s from %s: %w", addr, h.Name(), r.err)
	}
	return r.c, nil
}

func dialIn(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering the namespace: %w", err)
	}
	// net.Dialer makes the socket on this thread; the connect itself
	// completes through the poller, which does not depend on the thread.
	c, dialErr := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it ends with this goroutine.
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("leaving the namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return c, dialErr
}
