package records

import (
	"fmt"
	"net/netip"
)

// ParseVPNCIDR parses and checks a VPN CIDR: a network address (host bits
// zero) with room for at least two peers.
func ParseVPNCIDR(s string) (netip.Prefix, error) {
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("vpn cidr %q: not a CIDR like 203.0.113.0/24", s)
	}
	if masked := prefix.Masked(); masked != prefix {
		return netip.Prefix{}, fmt.Errorf("vpn cidr %q: not a network address (host bits set); did you mean %s?", s, masked)
	}
	maxBits := 30
	if prefix.Addr().Is6() {
		maxBits = 126
	}
	if prefix.Bits() > maxBits {
		return netip.Prefix{}, fmt.Errorf("vpn cidr %q: too small, the prefix length must be at most /%d", s, maxBits)
	}
	return prefix, nil
}
