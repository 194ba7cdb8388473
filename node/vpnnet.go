package node

import (
	"context"
	"net"
	"net/netip"
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
