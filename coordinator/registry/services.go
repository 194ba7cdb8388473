package registry

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

func scanServices(tx store.Tx, into map[netip.Addr]records.Services) error {
	return tx.Scan(prefixSvcs, func(key string, value []byte) error {
		ip, err := netip.ParseAddr(key[len(prefixSvcs):])
		if err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		var s records.Services
		if err := store.DecodeJSON(key, value, &s); err != nil {
			return err
		}
		into[ip] = s
		return nil
	})
}

// SetRegistration records the outcome of a node's registration handshake:
// with an empty failure the node is registered with reevePubKey; otherwise
// it is unregistered and failure says why.
func (r *Registry) SetRegistration(ip netip.Addr, reevePubKey []byte, failure string) (records.Peer, error) {
	// The same failure again changes nothing: no new revision wakes the
	// watchers while a node keeps failing.
	if p, ok := r.Peer(ip); ok && failure != "" && p.State == records.StateActive && p.Role != records.RoleAdmin &&
		!p.Registered && p.RegistrationError == failure {
		return p, nil
	}
	var out records.Peer
	err := r.update(func(m *mutation) error {
		p, ok := m.lookupIP(ip)
		if !ok || p.State != records.StateActive || p.Role == records.RoleAdmin {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		if failure == "" {
			p.Registered, p.ReevePubKey, p.RegisteredAt, p.RegistrationError = true, reevePubKey, time.Now().UTC(), ""
		} else {
			p.Registered, p.ReevePubKey, p.RegisteredAt, p.RegistrationError = false, nil, time.Time{}, failure
		}
		var err error
		out, err = m.put(p)
		return err
	})
	if err != nil {
		return records.Peer{}, fmt.Errorf("recording registration of %s: %w", ip, err)
	}
	return out, nil
}

// SetServices replaces the service records of the registered node at ip.
// It changes nothing (and does not bump the revision) when they are the
// same, and reports whether they changed.
func (r *Registry) SetServices(ip netip.Addr, s records.Services) (bool, error) {
	s = s.Sorted()
	r.mu.RLock()
	old, had := r.services[ip]
	r.mu.RUnlock()
	if had && old.Equal(s) {
		return false, nil
	}
	err := r.update(func(m *mutation) error {
		p, ok := m.lookupIP(ip)
		if !ok || !p.Registered {
			return fmt.Errorf("%w %s (not a registered node)", ErrUnknownPeer, ip)
		}
		s.Revision = m.rev
		if err := store.PutJSON(m.tx, prefixSvcs+ip.String(), s); err != nil {
			return err
		}
		m.services[ip] = s
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("recording services of %s: %w", ip, err)
	}
	return true, nil
}

// Services returns every node's service records, by VPN IP.
func (r *Registry) Services() map[netip.Addr]records.Services {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[netip.Addr]records.Services, len(r.services))
	for ip, s := range r.services {
		out[ip] = s
	}
	return out
}

// PeerByName finds the active peer named name.
func (r *Registry) PeerByName(name string) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.peers {
		if p.Name == name && p.State == records.StateActive {
			return p, true
		}
	}
	return records.Peer{}, false
}

// Peer returns the record of the peer at ip.
func (r *Registry) Peer(ip netip.Addr) (records.Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.peers[ip]
	return p, ok
}

// Snapshot returns the revision, every peer record and every node's service
// records, all as of that revision.
func (r *Registry) Snapshot() (uint64, []records.Peer, map[netip.Addr]records.Services) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	services := make(map[netip.Addr]records.Services, len(r.services))
	for ip, s := range r.services {
		services[ip] = s
	}
	return r.revision, r.sortedLocked(func(records.Peer) bool { return true }), services
}
