package registry

import (
	"math/big"
	"net/netip"
)

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
