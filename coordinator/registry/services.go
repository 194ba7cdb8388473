package registry

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/fabricmesh/fabric/internal/store"
)

// Services are the service endpoints and clients a node's reeve registered.
type Services struct {
	Endpoints []ServiceEndpoint `json:"endpoints,omitempty"`
	Clients   []ServiceClient   `json:"clients,omitempty"`
	// Revision is the cluster revision of the last change.
	Revision uint64 `json:"revision"`
}

// ServiceEndpoint is a service a node serves, on its VPN IP.
type ServiceEndpoint struct {
	Service string `json:"service"`
	Port    uint16 `json:"port"`
}

// ServiceClient is a service client on a node, with its signing key.
type ServiceClient struct {
	Service string `json:"service"`
	PubKey  []byte `json:"pubKey"`
}

// equal compares the records, ignoring the revision.
func (s Services) equal(o Services) bool {
	return slices.Equal(s.Endpoints, o.Endpoints) && slices.EqualFunc(s.Clients, o.Clients, func(a, b ServiceClient) bool {
		return a.Service == b.Service && bytes.Equal(a.PubKey, b.PubKey)
	})
}

// sorted returns s with its records in a canonical order.
func (s Services) sorted() Services {
	s.Endpoints = slices.Clone(s.Endpoints)
	s.Clients = slices.Clone(s.Clients)
	slices.SortFunc(s.Endpoints, func(a, b ServiceEndpoint) int { return cmpStrings(a.Service, b.Service) })
	slices.SortFunc(s.Clients, func(a, b ServiceClient) int { return cmpStrings(a.Service, b.Service) })
	return s
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func scanServices(tx store.Tx, into map[netip.Addr]Services) error {
	return tx.Scan(prefixSvcs, func(key string, value []byte) error {
		ip, err := netip.ParseAddr(key[len(prefixSvcs):])
		if err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		var s Services
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
func (r *Registry) SetRegistration(ip netip.Addr, reevePubKey []byte, failure string) (Peer, error) {
	// The same failure again changes nothing: no new revision wakes the
	// watchers while a node keeps failing.
	if p, ok := r.Peer(ip); ok && failure != "" && p.State == StateActive && p.Role != RoleAdmin &&
		!p.Registered && p.RegistrationError == failure {
		return p, nil
	}
	var out Peer
	err := r.update(func(m *mutation) error {
		p, ok := m.lookupIP(ip)
		if !ok || p.State != StateActive || p.Role == RoleAdmin {
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
		return Peer{}, fmt.Errorf("recording registration of %s: %w", ip, err)
	}
	return out, nil
}

// SetServices replaces the service records of the registered node at ip.
// It changes nothing (and does not bump the revision) when they are the
// same, and reports whether they changed.
func (r *Registry) SetServices(ip netip.Addr, s Services) (bool, error) {
	s = s.sorted()
	r.mu.RLock()
	old, had := r.services[ip]
	r.mu.RUnlock()
	if had && old.equal(s) {
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
func (r *Registry) Services() map[netip.Addr]Services {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[netip.Addr]Services, len(r.services))
	for ip, s := range r.services {
		out[ip] = s
	}
	return out
}

// PeerByName finds the active peer named name.
func (r *Registry) PeerByName(name string) (Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.peers {
		if p.Name == name && p.State == StateActive {
			return p, true
		}
	}
	return Peer{}, false
}

// Peer returns the record of the peer at ip.
func (r *Registry) Peer(ip netip.Addr) (Peer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.peers[ip]
	return p, ok
}

// Snapshot returns the revision, every peer record and every node's service
// records, all as of that revision.
func (r *Registry) Snapshot() (uint64, []Peer, map[netip.Addr]Services) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	services := make(map[netip.Addr]Services, len(r.services))
	for ip, s := range r.services {
		services[ip] = s
	}
	return r.revision, r.sortedLocked(func(Peer) bool { return true }), services
}
