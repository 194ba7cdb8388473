package netmgr

import (
	"math/rand/v2"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Handshake kicks.
//
// A new peer with a persistent keepalive starts its handshake the moment it
// is added. Two things can make that first handshake fail, and WireGuard
// only retries after its 5 s rekey timeout: the initiation reached the
// other side before that side knew us (it is dropped), or both sides
// initiated at the same time (both learn of each other from the same
// coordinator revision), each answered the other's initiation and so
// invalidated its own. Either way a freshly meshed pair would wait 5 s.
//
// So the manager watches the peers it added: one that has no completed
// handshake kickAfter (plus jitter, so the two sides of a crossed pair do
// not kick together) after being added is removed and added again, which
// resets its handshake state and sends a new initiation at once. It kicks a
// peer at most maxKicks times, backing off; after that WireGuard's own
// retries go on.
const (
	kickAfter    = 400 * time.Millisecond
	kickJitter   = 400 * time.Millisecond
	maxKicks     = 3
	kickInterval = 100 * time.Millisecond
)

// freshPeer is a peer added recently whose handshake is being watched.
type freshPeer struct {
	config wgtypes.PeerConfig // as added
	kicks  int
	next   time.Time
}

func kickDelay(kicks int) time.Duration {
	return kickAfter<<kicks + rand.N(kickJitter)
}

// watchAdded records the peers a diff adds that will start a handshake by
// themselves (an endpoint and a keepalive), and forgets removed ones.
// m.mu must be held.
func (m *Manager) watchAdded(diff []wgtypes.PeerConfig, now time.Time) {
	for _, d := range diff {
		switch {
		case d.Remove:
			delete(m.fresh, d.PublicKey)
		case !d.UpdateOnly && d.Endpoint != nil && valueOr(d.PersistentKeepaliveInterval) > 0:
			m.fresh[d.PublicKey] = &freshPeer{config: d, next: now.Add(kickDelay(0))}
		}
	}
	if len(m.fresh) > 0 && m.kickStop == nil {
		m.kickStop = make(chan struct{})
		go m.kickLoop(m.kickStop)
	}
}

// kickLoop runs while some peers are watched.
func (m *Manager) kickLoop(stop chan struct{}) {
	t := time.NewTicker(kickInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if !m.kickDue(now) {
				return
			}
		}
	}
}

// kickDue kicks the watched peers that are due and reports whether any
// peer is still watched.
func (m *Manager) kickDue(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || len(m.fresh) == 0 {
		m.kickStop = nil
		return false
	}
	dev, err := m.device()
	if err != nil {
		m.log.Debug("reading device for handshake kicks", "err", err)
		return true
	}
	var kick []wgtypes.PeerConfig
	for key, live := range livePeers(dev) {
		f, ok := m.fresh[key]
		switch {
		case !ok:
		case !live.LastHandshakeTime.IsZero() || f.kicks >= maxKicks:
			delete(m.fresh, key)
		case now.After(f.next):
			f.kicks++
			f.next = now.Add(kickDelay(f.kicks))
			kick = append(kick, wgtypes.PeerConfig{PublicKey: key, Remove: true}, f.config)
		}
	}
	if len(kick) > 0 {
		if err := m.configureDevice(wgtypes.Config{Peers: kick}); err != nil {
			m.log.Warn("re-adding peers without a handshake", "err", err)
		} else {
			m.log.Debug("re-added peers without a handshake", "peers", len(kick)/2)
		}
	}
	return true
}

func livePeers(dev *wgtypes.Device) map[wgtypes.Key]wgtypes.Peer {
	out := make(map[wgtypes.Key]wgtypes.Peer, len(dev.Peers))
	for _, p := range dev.Peers {
		out[p.PublicKey] = p
	}
	return out
}

// stopKicks forgets every watched peer. m.mu must be held.
func (m *Manager) stopKicks() {
	if m.kickStop != nil {
		close(m.kickStop)
		m.kickStop = nil
	}
	clear(m.fresh)
}
