// Package coretest holds fakes of core's interfaces for tests and the
// in-process cluster. It imports nothing of core, so core's own tests use it.
package coretest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// FakeNetworkManager is an in-memory core.NetworkManager for tests and the
// in-process cluster: it keeps the device it would have configured and can
// fail on demand.
type FakeNetworkManager struct {
	mu         sync.Mutex
	up         bool
	privKey    wgtypes.Key
	listenPort int
	address    netip.Prefix
	peers      map[wgtypes.Key]wgtypes.PeerConfig
	failUp     error
	failPeers  error
}

// NewFakeNetworkManager returns a fake with no device.
func NewFakeNetworkManager() *FakeNetworkManager {
	return &FakeNetworkManager{peers: map[wgtypes.Key]wgtypes.PeerConfig{}}
}

// FailUp makes the next calls of Up fail with err (nil to stop).
func (f *FakeNetworkManager) FailUp(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failUp = err
}

// FailSetPeers makes the next calls of SetPeers fail with err (nil to stop).
func (f *FakeNetworkManager) FailSetPeers(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failPeers = err
}

// Up implements core.NetworkManager.
func (f *FakeNetworkManager) Up(_ context.Context, privKey wgtypes.Key, listenPort int, address netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failUp != nil {
		return f.failUp
	}
	if listenPort <= 0 || listenPort > 65535 || !address.IsValid() {
		return fmt.Errorf("fake network: bad port %d or address %s", listenPort, address)
	}
	f.up, f.privKey, f.listenPort, f.address = true, privKey, listenPort, address
	return nil
}

// SetPeers implements core.NetworkManager.
func (f *FakeNetworkManager) SetPeers(_ context.Context, peers []wgtypes.PeerConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPeers != nil {
		return f.failPeers
	}
	if !f.up {
		return fmt.Errorf("fake network: set peers: device is down")
	}
	next := map[wgtypes.Key]wgtypes.PeerConfig{}
	for _, p := range peers {
		if _, dup := next[p.PublicKey]; dup {
			return fmt.Errorf("fake network: duplicate peer %s", p.PublicKey)
		}
		next[p.PublicKey] = p
	}
	f.peers = next
	return nil
}

// Down implements core.NetworkManager.
func (f *FakeNetworkManager) Down(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up, f.peers = false, map[wgtypes.Key]wgtypes.PeerConfig{}
	return nil
}

// FakeDevice is the fake's device as a test sees it.
type FakeDevice struct {
	Up         bool
	PubKey     wgtypes.Key
	ListenPort int
	Address    netip.Prefix
	// AllowedIPs of each peer, sorted by peer VPN IP.
	Peers []netip.Prefix
}

// Device returns the configured device.
func (f *FakeNetworkManager) Device() FakeDevice {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := FakeDevice{Up: f.up, ListenPort: f.listenPort, Address: f.address}
	if f.up {
		d.PubKey = f.privKey.PublicKey()
	}
	for _, p := range f.peers {
		for _, n := range p.AllowedIPs {
			ip, _ := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			d.Peers = append(d.Peers, netip.PrefixFrom(ip.Unmap(), ones))
		}
	}
	slices.SortFunc(d.Peers, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return d
}
