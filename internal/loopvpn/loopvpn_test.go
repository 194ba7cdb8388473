package loopvpn

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestListenDial(t *testing.T) {
	v := New()
	ctx := context.Background()
	addr := netip.MustParseAddrPort("203.0.113.7:7450")
	lis, err := v.Listen(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		if c, err := lis.Accept(); err == nil {
			io.WriteString(c, "hello")
			c.Close()
		}
	}()
	c, err := v.Dial(ctx, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "hello" {
		t.Errorf("read %q, %v; want hello", got, err)
	}

	// A route sends the connections to another address to addr's listener.
	v.Route(netip.MustParseAddrPort("203.0.113.9:7450"), addr)
	go func() {
		if c, err := lis.Accept(); err == nil {
			c.Close()
		}
	}()
	if c, err := v.Dial(ctx, "203.0.113.9:7450"); err != nil {
		t.Errorf("Dial through a route: %v", err)
	} else {
		c.Close()
	}

	for _, tt := range []struct{ addr, want string }{
		{"203.0.113.8:7450", "no route to host"},
		{"not an address", "not an ip:port"},
	} {
		if _, err := v.Dial(ctx, tt.addr); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Dial(%q) = %v, want an error with %q", tt.addr, err, tt.want)
		}
	}
}
