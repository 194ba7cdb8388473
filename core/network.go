package core

import (
	"context"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// NetworkManager owns the peer's WireGuard interface.
//
// Up creates the interface if it does not exist (or adopts an existing one),
// sets its private key, listen port and address (the VPN IP with the prefix
// length of the VPN CIDR, so the whole VPN is routed through it) and sets the
// link up. It is idempotent.
//
// SetPeers makes the device's peer set exactly peers: it reads the live
// device and applies only the difference (peers added, removed or changed).
//
// Down removes the interface.
type NetworkManager interface {
	Up(ctx context.Context, privKey wgtypes.Key, listenPort int, address netip.Prefix) error
	SetPeers(ctx context.Context, peers []wgtypes.PeerConfig) error
	Down(ctx context.Context) error
}

// HandshakeReader is implemented by network managers that can tell when
// the last WireGuard handshake with a peer was (the zero time: none yet).
type HandshakeReader interface {
	LastHandshake(ctx context.Context, peer wgtypes.Key) (time.Time, error)
}
