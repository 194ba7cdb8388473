package registry

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
)

// Liveness is what the registry records of a peer's liveness: whether it
// is online, since when, and when it was last seen at that change. Only
// changes are recorded (each is a change-log entry); the time a peer was
// last seen moves in the coordinator's memory (coordinator/liveness).
type Liveness struct {
	Online   bool      `json:"online"`
	Since    time.Time `json:"since"`
	LastSeen time.Time `json:"lastSeen,omitzero"`
}

// SetLiveness records that the peer at ip came online or went offline at
// at, last seen at lastSeen. The same state again changes nothing.
func (r *Registry) SetLiveness(ip netip.Addr, online bool, at, lastSeen time.Time) error {
	kind, word := KindOffline, "offline"
	if online {
		kind, word = KindOnline, "online"
	}
	err := r.update(kind, func(m *mutation) error {
		if p, ok := m.peer(ip); !ok || p.State == records.StateRemoved {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		if l, known := m.s.liveness[ip]; known && l.Online == online {
			return errNoChange
		}
		m.liveness[ip] = &Liveness{Online: online, Since: at.UTC(), LastSeen: lastSeen.UTC()}
		m.touch(ip)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording that %s is %s: %w", ip, word, err)
	}
	return nil
}
