package records

import (
	"fmt"
	"net/netip"
)

// ParseVPNCIDR parses and checks a VPN CIDR: a network address (host bits
// zero) with room for a node beside the coordinator and the first admin,
// which take its first two addresses: at most /29 for IPv4 (whose network
// and broadcast addresses are never given), /126 for IPv6.
func ParseVPNCIDR(s string) (netip.Prefix, error) {
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("vpn cidr %q: not a CIDR like 203.0.113.0/24", s)
	}
	if masked := prefix.Masked(); masked != prefix {
		return netip.Prefix{}, fmt.Errorf("vpn cidr %q: not a network address (host bits set); did you mean %s?", s, masked)
	}
	maxBits := 29
	if prefix.Addr().Is6() {
		maxBits = 126
	}
	if prefix.Bits() > maxBits {
		return netip.Prefix{}, fmt.Errorf("vpn cidr %q: too small to hold a node beside the coordinator and the admin; the prefix length must be at most /%d", s, maxBits)
	}
	return prefix, nil
}
