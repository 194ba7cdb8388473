// Package loopvpn is a VPN for in-process clusters and tests whose network
// managers are fakes: a VPN address that is listened on is served on a
// loopback port, and dialing the VPN address reaches that port.
package loopvpn

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// VPN maps the VPN addresses listened on to loopback listeners. Share one
// among the peers of a cluster.
type VPN struct {
	mu     sync.Mutex
	ports  map[netip.AddrPort]string
	routes map[netip.AddrPort]netip.AddrPort
}

// New returns an empty VPN.
func New() *VPN {
	return &VPN{ports: map[netip.AddrPort]string{}, routes: map[netip.AddrPort]netip.AddrPort{}}
}

// Route makes the connections to from reach the listener of to, as a
// misrouted network would (for tests of callers that must notice).
func (v *VPN) Route(from, to netip.AddrPort) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.routes[from] = to
}

// Listen serves addr on a new loopback port.
func (v *VPN) Listen(ctx context.Context, addr netip.AddrPort) (net.Listener, error) {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ports[addr] = lis.Addr().String()
	return lis, nil
}

// Dial connects to the loopback port serving the VPN address addr.
func (v *VPN) Dial(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if to, ok := v.routes[ap]; ok {
		ap = to
	}
	local, ok := v.ports[ap]
	v.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial %s: no route to host (nothing listens there in the loopback vpn)", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", local)
}
