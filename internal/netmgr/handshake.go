package netmgr

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// First handshakes.
//
// Setting a peer's persistent keepalive makes WireGuard send a keepalive at
// once, so a peer with a keepalive starts its handshake the moment it is
// added. When two peers add each other at about the same time (both learn
// of the other from the same coordinator revision) that goes wrong in two
// ways, and WireGuard only retries after its 5 s rekey timeout (or, worse,
// after 15 s without replies):
//
//   - the initiation reaches the other side before that side knows us, and
//     is dropped;
//   - both sides initiate, the initiations cross, and each side answers the
//     other's: the handshakes fail or, in wireguard-go, leave one side with
//     a session whose index the other side has already replaced, so data
//     flows one way only.
//
// So of two peers only the one with the lower VPN address initiates when it
// adds the other. The other adds it with its keepalive held back and turns
// the keepalive on releaseAfter later. By then the handshake has normally
// completed and that is just a keepalive; if it has not, the initiation was
// dropped because we added the peer late, and our keepalive starts the
// handshake from this side now, while the other side waits for its retry
// timer and so cannot cross it. A restarted peer, whose old peers all still
// know it, reaches the lower ones the same way within releaseAfter.
const releaseAfter = time.Second

// peerAddr is the first allowed IP of a peer, its VPN address.
func peerAddr(d wgtypes.PeerConfig) netip.Addr {
	if len(d.AllowedIPs) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(d.AllowedIPs[0].IP)
	return a.Unmap()
}

// startsHandshake reports whether a newly added peer d makes WireGuard
// initiate by itself: it has an endpoint and a keepalive.
func startsHandshake(d wgtypes.PeerConfig) bool {
	return d.Endpoint != nil && valueOr(d.PersistentKeepaliveInterval) > 0
}

// holdKeepalives returns desired with the keepalives of held-back peers
// zeroed, so that the diff leaves them off, and the held-back keepalives
// after this change: new peers with a lower VPN address than self, known
// peers whose keepalive is being turned on (a node the coordinator knew as
// pending, which initiates itself when it comes up), and peers still held
// from before. Peers no longer desired are dropped.
func holdKeepalives(self netip.Addr, live map[wgtypes.Key]wgtypes.Peer, held map[wgtypes.Key]time.Duration,
	desired []wgtypes.PeerConfig) ([]wgtypes.PeerConfig, map[wgtypes.Key]time.Duration) {
	out := make([]wgtypes.PeerConfig, len(desired))
	next := map[wgtypes.Key]time.Duration{}
	zero := time.Duration(0)
	for i, d := range desired {
		out[i] = d
		_, wasHeld := held[d.PublicKey]
		l, known := live[d.PublicKey]
		isNew := !known && self.IsValid() && peerAddr(d).Less(self)
		turnedOn := known && l.PersistentKeepaliveInterval == 0
		if startsHandshake(d) && (wasHeld || isNew || turnedOn) {
			next[d.PublicKey] = *d.PersistentKeepaliveInterval
			out[i].PersistentKeepaliveInterval = &zero
		}
	}
	return out, next
}

// prepare applies holdKeepalives to desired and arms or disarms the timers
// that release held keepalives. m.mu must be held.
func (m *Manager) prepare(live []wgtypes.Peer, desired []wgtypes.PeerConfig) []wgtypes.PeerConfig {
	byKey := make(map[wgtypes.Key]wgtypes.Peer, len(live))
	for _, p := range live {
		byKey[p.PublicKey] = p
	}
	out, next := holdKeepalives(m.address.Addr(), byKey, m.held, desired)
	for key, t := range m.releases {
		if _, ok := next[key]; !ok {
			t.Stop()
			delete(m.releases, key)
		}
	}
	for key := range next {
		if _, ok := m.releases[key]; !ok {
			m.releases[key] = time.AfterFunc(releaseAfter, func() { m.release(key) })
		}
	}
	m.held = next
	return out
}

// release turns a held-back keepalive on.
func (m *Manager) release(key wgtypes.Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ka, ok := m.held[key]
	if !ok || m.closed {
		return
	}
	delete(m.held, key)
	delete(m.releases, key)
	err := m.configureDevice(wgtypes.Config{Peers: []wgtypes.PeerConfig{
		{PublicKey: key, UpdateOnly: true, PersistentKeepaliveInterval: &ka},
	}})
	if err != nil {
		m.log.Warn("turning on a peer's keepalive", "peer", key, "err", err)
	}
}

// forgetPeers stops the pending releases. m.mu must be held.
func (m *Manager) forgetPeers() {
	for _, t := range m.releases {
		t.Stop()
	}
	clear(m.releases)
	m.held = nil
}
