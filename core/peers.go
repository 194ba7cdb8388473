package core

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wgPeers turns the cluster's records into the WireGuard peers of the peer
// at self: every other active peer, reachable at its VPN IP only.
func wgPeers(peers []registry.Peer, self netip.Addr) ([]wgtypes.PeerConfig, error) {
	var out []wgtypes.PeerConfig
	for _, p := range peers {
		if p.VPNIP == self || p.State != registry.StateActive {
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

func wgPeer(p registry.Peer) (wgtypes.PeerConfig, error) {
	key, err := wgtypes.NewKey(p.WGPubKey)
	if err != nil {
		return wgtypes.PeerConfig{}, fmt.Errorf("wireguard public key: %w", err)
	}
	pc := wgtypes.PeerConfig{
		PublicKey:         key,
		ReplaceAllowedIPs: true,
		AllowedIPs:        []net.IPNet{hostNet(p.VPNIP)},
	}
	if p.WGEndpoint != "" {
		ap, err := netip.ParseAddrPort(p.WGEndpoint)
		if err != nil {
			return wgtypes.PeerConfig{}, fmt.Errorf("wireguard endpoint: %w", err)
		}
		pc.Endpoint = net.UDPAddrFromAddrPort(ap)
	}
	return pc, nil
}

// hostNet is ip as a single-address network.
func hostNet(ip netip.Addr) net.IPNet {
	return net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}
