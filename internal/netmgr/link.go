package netmgr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrKernelUnsupported reports that the kernel cannot create WireGuard links
// (no wireguard module). In ModeAuto, Up falls back to wireguard-go instead.
var ErrKernelUnsupported = errors.New("kernel wireguard not supported")

// LinkExists reports whether the network namespace has an interface
// called name (of any kind).
func LinkExists(name string) (bool, error) {
	link, err := findLink(name)
	return link != nil, err
}

// findLink returns the link called name, or nil if there is none.
func findLink(name string) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("looking up link: %w", err)
	}
	return link, nil
}

// createKernelLink creates a kernel WireGuard link.
func createKernelLink(name string, mtu int) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs})
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil, fmt.Errorf("%w: %w", ErrKernelUnsupported, err)
	}
	if err != nil {
		return nil, fmt.Errorf("creating wireguard link: %w", err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up new wireguard link: %w", err)
	}
	return link, nil
}

// configureLink sets the link's MTU and address and brings it up.
func configureLink(link netlink.Link, address netip.Prefix, mtu int) error {
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("setting mtu %d: %w", mtu, err)
		}
	}
	if err := setAddress(link, address); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting link up: %w", err)
	}
	return nil
}

// setAddress makes address the link's only address (IPv6 link-local
// addresses the kernel assigns are left alone). Stale addresses go first:
// deleting a primary IPv4 address also deletes the secondaries of its subnet,
// which may include address.
func setAddress(link netlink.Link, address netip.Prefix) error {
	addrs, err := listAddrs(link)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		p := toPrefix(*a.IPNet)
		if p == address || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		// EADDRNOTAVAIL: already deleted along with its primary.
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing stale address %s: %w", p, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: prefixIPNet(address)}); err != nil {
		return fmt.Errorf("setting address %s: %w", address, err)
	}
	return nil
}

// listAddrs lists the link's addresses, retrying a dump that a concurrent
// change interrupted.
func listAddrs(link netlink.Link) ([]netlink.Addr, error) {
	var err error
	for range 3 {
		var addrs []netlink.Addr
		addrs, err = netlink.AddrList(link, netlink.FAMILY_ALL)
		if err == nil {
			return addrs, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("listing addresses: %w", err)
}

// prefixIPNet converts p to a net.IPNet keeping the host bits.
func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// toPrefix converts n to a prefix keeping the host bits; IPv4-mapped
// addresses become IPv4. An invalid n gives an invalid prefix.
func toPrefix(n net.IPNet) netip.Prefix {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, bits := n.Mask.Size()
	if bits == 128 && addr.Is4In6() {
		ones -= 96
	}
	if bits == 0 || ones < 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(addr.Unmap(), ones)
}
