package netmgr

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// diffPeers returns the minimal peer configuration that turns the live peer
// set into desired: peers absent from desired are removed, new peers are
// added, and existing peers get only their changed fields (with UpdateOnly
// set). Unchanged peers do not appear. Removals come first (sorted by public
// key), then additions and updates in the order of desired.
//
// desired is a complete description: a nil PersistentKeepaliveInterval or
// PresharedKey means none. A nil Endpoint means "not known": the endpoint the
// device learned from the peer's traffic is kept.
func diffPeers(live []wgtypes.Peer, desired []wgtypes.PeerConfig) ([]wgtypes.PeerConfig, error) {
	if err := checkDesired(desired); err != nil {
		return nil, err
	}
	liveByKey := make(map[wgtypes.Key]wgtypes.Peer, len(live))
	for _, p := range live {
		liveByKey[p.PublicKey] = p
	}
	out := removals(live, desired)
	for _, d := range desired {
		l, ok := liveByKey[d.PublicKey]
		if !ok {
			out = append(out, addition(d))
			continue
		}
		if u, changed := update(l, d); changed {
			out = append(out, u)
		}
	}
	return out, nil
}

// checkDesired rejects peer sets that do not describe a device.
func checkDesired(desired []wgtypes.PeerConfig) error {
	seen := make(map[wgtypes.Key]bool, len(desired))
	for _, d := range desired {
		switch {
		case d.PublicKey == wgtypes.Key{}:
			return errors.New("desired peer has a zero public key")
		case seen[d.PublicKey]:
			return fmt.Errorf("duplicate desired peer %s", d.PublicKey)
		case d.Remove || d.UpdateOnly:
			return fmt.Errorf("desired peer %s has Remove or UpdateOnly set", d.PublicKey)
		}
		seen[d.PublicKey] = true
	}
	return nil
}

// removals lists the live peers that are not desired, sorted by key.
func removals(live []wgtypes.Peer, desired []wgtypes.PeerConfig) []wgtypes.PeerConfig {
	want := make(map[wgtypes.Key]bool, len(desired))
	for _, d := range desired {
		want[d.PublicKey] = true
	}
	var out []wgtypes.PeerConfig
	for _, p := range live {
		if !want[p.PublicKey] {
			out = append(out, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	slices.SortFunc(out, func(a, b wgtypes.PeerConfig) int {
		return bytes.Compare(a.PublicKey[:], b.PublicKey[:])
	})
	return out
}

// addition is the configuration that creates peer d.
func addition(d wgtypes.PeerConfig) wgtypes.PeerConfig {
	d.ReplaceAllowedIPs = true
	if d.PresharedKey != nil && *d.PresharedKey == (wgtypes.Key{}) {
		d.PresharedKey = nil
	}
	// Always state the keepalive, 0 included: wireguard-go does not reset
	// its "keepalive turned on" flag between the peers of one
	// configuration, so a peer without a keepalive line that follows one
	// whose keepalive was turned on would get an immediate keepalive (and
	// handshake initiation) too.
	ka := valueOr(d.PersistentKeepaliveInterval)
	d.PersistentKeepaliveInterval = &ka
	return d
}

// update is the configuration that changes live peer l into d, and whether
// anything changed.
func update(l wgtypes.Peer, d wgtypes.PeerConfig) (wgtypes.PeerConfig, bool) {
	u := wgtypes.PeerConfig{PublicKey: d.PublicKey, UpdateOnly: true}
	changed := false
	if d.Endpoint != nil && !sameEndpoint(l.Endpoint, d.Endpoint) {
		u.Endpoint = d.Endpoint
		changed = true
	}
	if psk := valueOr(d.PresharedKey); psk != l.PresharedKey {
		u.PresharedKey = &psk
		changed = true
	}
	if ka := valueOr(d.PersistentKeepaliveInterval); ka != l.PersistentKeepaliveInterval {
		u.PersistentKeepaliveInterval = &ka
		changed = true
	}
	if !samePrefixes(l.AllowedIPs, d.AllowedIPs) {
		u.ReplaceAllowedIPs = true
		u.AllowedIPs = d.AllowedIPs
		changed = true
	}
	return u, changed
}

// valueOr dereferences p, or returns the zero value for nil.
func valueOr[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// sameEndpoint compares UDP addresses, treating IPv4-mapped IPv6 as IPv4.
func sameEndpoint(a, b *net.UDPAddr) bool {
	if a == nil || b == nil {
		return a == b
	}
	return unmapped(a) == unmapped(b)
}

func unmapped(a *net.UDPAddr) netip.AddrPort {
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// samePrefixes compares allowed-IP lists as sets of masked prefixes, the way
// a device stores them.
func samePrefixes(a, b []net.IPNet) bool {
	return slices.Equal(prefixSet(a), prefixSet(b))
}

func prefixSet(nets []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		out = append(out, toPrefix(n).Masked())
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
