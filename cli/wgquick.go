package cli

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"

	"github.com/fabricmesh/fabric/internal/atomicfile"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
)

// wgQuickConfig renders the wg-quick config that puts the admin's machine on
// the VPN: one peer per active coordinator and node, each reachable at its
// VPN IP only. It listens on the port of `fabric vpn up`, so the endpoint
// that `fabric vpn up` told the cluster stays right for either.
func wgQuickConfig(a *adminDir, cluster *pubapipb.ClusterStatus) (string, error) {
	cidr, err := netip.ParsePrefix(cluster.GetVpnCidr())
	if err != nil {
		return "", fmt.Errorf("cluster vpn cidr %q: %w", cluster.GetVpnCidr(), err)
	}
	ip, err := netip.ParseAddr(a.bundle.AdminVPNIP)
	if err != nil {
		return "", fmt.Errorf("admin vpn ip %q: %w", a.bundle.AdminVPNIP, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# fabric cluster %s: admin %s on the VPN.\n# Bring it up with: wg-quick up %s\n\n", cluster.GetClusterId(), a.bundle.AdminName, a.file(wgQuickFile))
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = %s\nListenPort = %d\n", a.adminVPNPrivKey, netip.PrefixFrom(ip, cidr.Bits()), defaultVPNListenPort)
	for _, p := range cluster.GetPeers() {
		if p.GetState() != "active" || p.GetRole() == "admin" || p.GetWgEndpoint() == "" {
			continue
		}
		fmt.Fprintf(&b, "\n[Peer]\n# %s (%s)\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s/%d\nPersistentKeepalive = 25\n",
			p.GetName(), p.GetRole(), base64.StdEncoding.EncodeToString(p.GetWgPubKey()), p.GetWgEndpoint(), p.GetVpnIp(), ip.BitLen())
	}
	return b.String(), nil
}

// writeWGQuick writes the admin's wg-quick config (mode 0600: it holds the
// admin's WireGuard private key).
func (a *adminDir) writeWGQuick(cluster *pubapipb.ClusterStatus) error {
	conf, err := wgQuickConfig(a, cluster)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(a.file(wgQuickFile), []byte(conf), privateFileMode); err != nil {
		return fmt.Errorf("writing wg-quick config: %w", err)
	}
	return nil
}
