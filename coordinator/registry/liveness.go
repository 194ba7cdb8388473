package registry

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// Liveness is what the registry records of a peer's liveness: whether it
// is online, since when, and when it was last seen at that change. Only
// changes are recorded (each is a change-log entry); the time a peer was
// last seen moves in the coordinator's memory (coordinator/liveness).
type Liveness struct {
	Online   bool      `json:"online"`
	Since    time.Time `json:"since"`
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// By is the coordinator that saw the peer (its name): only it marks
	// the peer offline, unless it stopped beating (ExpireLiveness).
	By string `json:"by,omitempty"`
}

// SetLiveness records that coordinator by saw the peer at ip come online,
// or lose it, at at, last seen at lastSeen. Coming online again through
// another coordinator (a failover) records the new one; going offline is
// recorded only by the coordinator that saw the peer online. The same
// state again changes nothing.
func (r *Registry) SetLiveness(ip netip.Addr, online bool, at, lastSeen time.Time, by string) error {
	return r.setLiveness(ip, online, at, lastSeen, by, func(cur Liveness) bool {
		if online {
			return cur.Online && cur.By == by
		}
		return !cur.Online || cur.By != by
	})
}

// ExpireLiveness records that the peer at ip, seen online by coordinator
// gone which stopped beating, is offline.
func (r *Registry) ExpireLiveness(ip netip.Addr, gone string, at time.Time) error {
	return r.setLiveness(ip, false, at, time.Time{}, gone, func(cur Liveness) bool {
		return !cur.Online || cur.By != gone
	})
}

func (r *Registry) setLiveness(ip netip.Addr, online bool, at, lastSeen time.Time, by string, unchanged func(Liveness) bool) error {
	kind, word := KindOffline, "offline"
	if online {
		kind, word = KindOnline, "online"
	}
	err := r.update(kind, func(m *mutation) error {
		if p, ok := m.peer(ip); !ok || p.State == records.StateRemoved {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		cur, known := m.s.liveness[ip]
		if known && unchanged(cur) || !known && !online {
			return errNoChange
		}
		if lastSeen.IsZero() {
			lastSeen = cur.LastSeen
		}
		m.liveness[ip] = &Liveness{Online: online, Since: at.UTC(), LastSeen: lastSeen.UTC(), By: by}
		if by != "" {
			m.detail = "seen by " + by
		}
		m.touch(ip)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording that %s is %s: %w", ip, word, err)
	}
	return nil
}

// Beat is what a coordinator writes of itself every few seconds, outside
// the change log: when, and the revision it applied. The coordinators of
// a cluster read each other's (Beats) for their liveness.
type Beat struct {
	At      time.Time `json:"at"`
	Applied uint64    `json:"applied"`
	// Watchers are the peers watching this coordinator, by VPN IP, with
	// the revision each applied.
	Watchers map[netip.Addr]uint64 `json:"watchers,omitempty"`
}

const prefixBeats = "registry/beats/"

// WriteBeat records the beat of the coordinator at ip.
func (r *Registry) WriteBeat(ip netip.Addr, b Beat) error {
	return r.store.Update(func(tx store.Tx) error { return store.PutJSON(tx, prefixBeats+ip.String(), b) })
}

// Beats reads every coordinator's last beat, by VPN IP.
func (r *Registry) Beats() (map[netip.Addr]Beat, error) {
	out := map[netip.Addr]Beat{}
	err := r.store.View(func(tx store.Tx) error {
		return tx.Scan(prefixBeats, func(key string, value []byte) error {
			ip, err := netip.ParseAddr(key[len(prefixBeats):])
			if err != nil {
				return nil
			}
			var b Beat
			if err := store.DecodeJSON(key, value, &b); err != nil {
				return err
			}
			out[ip] = b
			return nil
		})
	})
	return out, err
}
