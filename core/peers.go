package core

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keepalive is the persistent keepalive of every peer with an endpoint.
// Besides keeping NAT mappings and showing liveness, setting it makes
// WireGuard send a keepalive at once, so a handshake starts as soon as a
// peer is added: without it, a handshake initiation that reached a peer
// before that peer knew the initiator is only retried after WireGuard's 5 s
// rekey timeout, and a freshly activated node would wait that long for its
// coordinator. (The network manager staggers these first keepalives so two
// peers adding each other do not initiate at the same time.)
const keepalive = 25 * time.Second

// wgPeers turns the cluster's records into the WireGuard peers of the peer
// at self: every other active peer, reachable at its VPN IP only. With
// pending (the coordinator's own device), nodes being activated are peers
// too, without endpoint or keepalive: the coordinator cannot reach them
// yet, but it knows their key, so it answers a new node's first handshake
// at once instead of dropping it.
func wgPeers(peers []records.Peer, self netip.Addr, pending bool) ([]wgtypes.PeerConfig, error) {
	var out []wgtypes.PeerConfig
	for _, p := range peers {
		if p.VPNIP == self {
			continue
		}
		if p.State == records.StatePending && pending && len(p.WGPubKey) > 0 {
			p.WGEndpoint = ""
		} else if p.State != records.StateActive {
			continue
		}
		pc, err := wgPeer(p)
		if err != nil {
			return nil, fmt.Errorf("peer %s (%s): %w", p.Name, p.VPNIP, err)
		}
		out = append(out, pc)
	}
	return out, nil
}

func wgPeer(p records.Peer) (wgtypes.PeerConfig, error) {
	key, err := wgtypes.NewKey(p.WGPubKey)
	if err != nil {
		return wgtypes.PeerConfig{}, fmt.Errorf("wireguard public key: %w", err)
	}
	pc := wgtypes.PeerConfig{
		PublicKey:         key,
		ReplaceAllowedIPs: true,
		AllowedIPs:        []net.IPNet{hostNet(p.VPNIP)},
	}
	// A peer without an endpoint (a roaming admin) is reached once it
	// writes first; there is nowhere to send keepalives to before that.
	if p.WGEndpoint != "" {
		ap, err := netip.ParseAddrPort(p.WGEndpoint)
		if err != nil {
			return wgtypes.PeerConfig{}, fmt.Errorf("wireguard endpoint: %w", err)
		}
		ka := keepalive
		pc.Endpoint = net.UDPAddrFromAddrPort(ap)
		pc.PersistentKeepaliveInterval = &ka
	}
	return pc, nil
}

// hostNet is ip as a single-address network.
func hostNet(ip netip.Addr) net.IPNet {
	return net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}
