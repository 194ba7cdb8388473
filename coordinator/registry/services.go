package registry

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
)

// SetRegistration records the outcome of a node's registration handshake:
// with an empty failure the node is registered with reevePubKey; otherwise
// it is unregistered and failure says why. The same failure again changes
// nothing: no new revision wakes the watchers while a node keeps failing.
func (r *Registry) SetRegistration(ip netip.Addr, reevePubKey []byte, failure string) (records.Peer, error) {
	return r.setRegistration(ip, reevePubKey, failure, nil)
}

// SetRegistrationSince is SetRegistration for a handshake that started
// from the peer's record prev: when the peer's registration changed since
// (another coordinator recorded a later attempt of the node first), it
// records nothing and fails with ErrConflict, so that a callback that
// failed late cannot undo the registration that followed it.
func (r *Registry) SetRegistrationSince(prev records.Peer, reevePubKey []byte, failure string) (records.Peer, error) {
	return r.setRegistration(prev.VPNIP, reevePubKey, failure, func(p records.Peer) error {
		if p.Registered != prev.Registered || !bytes.Equal(p.ReevePubKey, prev.ReevePubKey) ||
			!p.RegisteredAt.Equal(prev.RegisteredAt) || p.RegistrationError != prev.RegistrationError {
			return fmt.Errorf("%w: the registration of %s changed while this handshake ran", ErrConflict, prev.Name)
		}
		return nil
	})
}

func (r *Registry) setRegistration(ip netip.Addr, reevePubKey []byte, failure string, check func(records.Peer) error) (records.Peer, error) {
	kind := KindRegistered
	if failure != "" {
		kind = KindUnregistered
	}
	var out records.Peer
	err := r.update(kind, func(m *mutation) error {
		p, ok := m.peer(ip)
		if !ok || p.State != records.StateActive || p.Role == records.RoleAdmin {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		if check != nil {
			if err := check(p); err != nil {
				return err
			}
		}
		if failure != "" && !p.Registered && p.RegistrationError == failure {
			out = p
			return errNoChange
		}
		if failure == "" {
			if _, revoked := m.s.revoked[string(reevePubKey)]; revoked {
				return fmt.Errorf("%w: the offered reeve key belonged to a removed node", ErrConflict)
			}
			p.Registered, p.ReevePubKey, p.RegisteredAt, p.RegistrationError = true, reevePubKey, time.Now().UTC(), ""
		} else {
			p.Registered, p.ReevePubKey, p.RegisteredAt, p.RegistrationError = false, nil, time.Time{}, failure
			m.detail = failure
		}
		out = m.put(p)
		return nil
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
	changed := false
	err := r.update(KindServices, func(m *mutation) error {
		p, ok := m.peer(ip)
		if !ok || !p.Registered || p.State != records.StateActive {
			return fmt.Errorf("%w %s (not a registered node)", ErrUnknownPeer, ip)
		}
		old := m.s.services[ip]
		if _, had := m.s.services[ip]; had && old.Equal(s) {
			return errNoChange
		}
		if err := m.s.checkRevoked(s); err != nil {
			return err
		}
		m.detail = servicesChange(old, s)
		m.setServices(ip, &s)
		changed = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("recording services of %s: %w", ip, err)
	}
	return changed, nil
}

// checkRevoked refuses service keys of removed nodes.
func (s *state) checkRevoked(sv records.Services) error {
	for _, c := range sv.Clients {
		if ip, revoked := s.revoked[string(c.PubKey)]; revoked {
			return fmt.Errorf("%w: the key of client %s belonged to removed node %s (%s)", ErrConflict, c.Service, s.peers[ip].Name, ip)
		}
	}
	return nil
}

// servicesChange says which services came up and which went down.
func servicesChange(old, now records.Services) string {
	names := func(s records.Services) map[string]bool {
		m := map[string]bool{}
		for _, e := range s.Endpoints {
			m["endpoint "+e.Service] = true
		}
		for _, c := range s.Clients {
			m["client "+c.Service] = true
		}
		return m
	}
	before, after := names(old), names(now)
	var up, down []string
	for n := range after {
		if !before[n] {
			up = append(up, n)
		}
	}
	for n := range before {
		if !after[n] {
			down = append(down, n)
		}
	}
	slices.Sort(up)
	slices.Sort(down)
	var parts []string
	if len(up) > 0 {
		parts = append(parts, "up: "+strings.Join(up, ", "))
	}
	if len(down) > 0 {
		parts = append(parts, "down: "+strings.Join(down, ", "))
	}
	if len(parts) == 0 {
		return "keys or ports changed"
	}
	return strings.Join(parts, "; ")
}
