package registry

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
)

// ErrCIDRFull is returned when the VPN CIDR has no address left to give.
var ErrCIDRFull = errors.New("vpn cidr is full")

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

// addrAt returns the address at offset within prefix, or false when the
// offset is outside the usable range. Offset 0 (the network address) and,
// for IPv4, the last address (broadcast) are never usable.
func addrAt(prefix netip.Prefix, offset uint64) (netip.Addr, bool) {
	if offset == 0 || offset > usable(prefix) {
		return netip.Addr{}, false
	}
	n := new(big.Int).SetBytes(prefix.Addr().AsSlice())
	n.Add(n, new(big.Int).SetUint64(offset))
	buf := n.FillBytes(make([]byte, len(prefix.Addr().AsSlice())))
	addr, _ := netip.AddrFromSlice(buf)
	return addr, true
}

// usable is the number of addresses addrAt hands out (offsets 1..usable),
// capped at the largest uint64.
func usable(prefix netip.Prefix) uint64 {
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	if hostBits >= 64 {
		return ^uint64(0)
	}
	size := uint64(1) << hostBits
	if prefix.Addr().Is4() {
		return size - 2
	}
	return size - 1
}
