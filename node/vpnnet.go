package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// VPNNet listens on and dials addresses inside the VPN.
type VPNNet interface {
	Listen(ctx context.Context, addr netip.AddrPort) (net.Listener, error)
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// HostVPN is the real VPN: the host's network stack, where the WireGuard
// interface carries the VPN addresses.
type HostVPN struct{}

// Listen implements VPNNet.
func (HostVPN) Listen(ctx context.Context, addr netip.AddrPort) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr.String())
}

// Dial implements VPNNet.
func (HostVPN) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// LoopbackVPN is a VPN for in-process clusters whose network managers are
// fakes: a VPN address that is listened on is served on a loopback port,
// and dialing the VPN address reaches that port.
type LoopbackVPN struct {
	mu    sync.Mutex
	ports map[netip.AddrPort]string
}

// NewLoopbackVPN returns an empty loopback VPN, shared by the daemons of one
// in-process cluster.
func NewLoopbackVPN() *LoopbackVPN {
	return &LoopbackVPN{ports: map[netip.AddrPort]string{}}
}

// Listen implements VPNNet.
func (v *LoopbackVPN) Listen(ctx context.Context, addr netip.AddrPort) (net.Listener, error) {
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

// Dial implements VPNNet.
func (v *LoopbackVPN) Dial(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	local, ok := v.ports[ap]
	v.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial %s: no route to host (nothing listens there in the loopback vpn)", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", local)
}
