package nshost

import (
	"net"
	"net/netip"
	"testing"
)

func TestDialContext(t *testing.T) {
	l := newLab(t, Config{})
	hosts, err := l.AddHosts(t.Context(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := hosts[0], hosts[1]
	var lis net.Listener
	if err := b.inNamespace(func() (err error) {
		lis, err = net.Listen("tcp", netip.AddrPortFrom(b.IP(), 0).String())
		return err
	}); err != nil {
		t.Fatalf("listening in %s: %v", b.Name(), err)
	}
	defer lis.Close()
	accepted := make(chan net.Addr, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c.RemoteAddr()
		c.Close()
	}()

	c, err := a.DialContext(t.Context(), lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	from := <-accepted
	if got, ok := from.(*net.TCPAddr); !ok || got.AddrPort().Addr() != a.IP() {
		t.Errorf("connection accepted from %v, want %s's address %s", from, a.Name(), a.IP())
	}
	if _, err := a.DialContext(t.Context(), netip.AddrPortFrom(b.IP(), 1).String()); err == nil {
		t.Error("dial to a closed port succeeded")
	}
}
