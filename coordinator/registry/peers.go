package registry

import (
	"cmp"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// Init records a new cluster, its coordinator (which gets the first address
// of the VPN CIDR), its first admins (the next addresses) and its SSH users
// (checked by the caller), all in one transaction. extra runs in the same
// transaction, so the caller can persist its own state atomically with the
// registry's. It returns the coordinator's record followed by the admins'.
func (r *Registry) Init(c records.Cluster, coordinator records.Peer, admins []records.Peer, users []records.SSHUser, extra func(store.Tx) error) ([]records.Peer, error) {
	first, ok := addrAt(c.VPNCIDR, 1)
	if !ok {
		return nil, fmt.Errorf("vpn cidr %s has no usable address", c.VPNCIDR)
	}
	c.CoordinatorVPNIP = first
	coordinator.Role, coordinator.VPNIP, coordinator.State = records.RoleCoordinator, first, records.StateActive
	var out []records.Peer
	err := r.update(KindInit, func(m *mutation) error {
		// Checked here, by the one writer: a check before update would
		// let concurrent Inits all pass and overwrite each other.
		if m.cluster != nil {
			return errors.New("registry is already initialized")
		}
		out = out[:0]
		m.cluster, m.initCluster, m.nextIP = &c, true, 2
		out = append(out, m.put(coordinator))
		for _, a := range admins {
			var err error
			if a.VPNIP, err = m.allocate(); err != nil {
				return err
			}
			a.Role, a.State = records.RoleAdmin, records.StateActive
			out = append(out, m.put(a))
		}
		m.setSSHUsers(users)
		if extra != nil {
			m.extras = append(m.extras, extra)
		}
		m.detail = fmt.Sprintf("cluster %s, VPN %s", c.ID, c.VPNCIDR)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initializing registry: %w", err)
	}
	return out, nil
}

// Reserve returns the record of the node at publicEndpoint, allocating a VPN
// IP on first sight, and marks it pending under name with the WireGuard key
// it reported (so the coordinator can accept its first packets before it is
// active). A node already active gives ErrAlreadyActive with its record. A
// name used by another peer that is not failed gives ErrConflict, and so do
// keys held by another active peer or by a removed one (signingPubKey may
// be nil when the node did not report it).
//
// With replaceActive, an active node is reserved again (same VPN IP, its
// registration cleared): the node at that endpoint lost its state and asks
// to be activated afresh.
func (r *Registry) Reserve(publicEndpoint, name string, vpnPubKey, signingPubKey []byte, replaceActive bool) (records.Peer, error) {
	return r.reserve(records.RoleNode, publicEndpoint, name, vpnPubKey, signingPubKey, replaceActive)
}

// ReserveCoordinator is Reserve for another coordinator of the cluster
// (which shares the registry's store).
func (r *Registry) ReserveCoordinator(publicEndpoint, name string, vpnPubKey, signingPubKey []byte) (records.Peer, error) {
	return r.reserve(records.RoleCoordinator, publicEndpoint, name, vpnPubKey, signingPubKey, false)
}

func (r *Registry) reserve(role records.Role, publicEndpoint, name string, vpnPubKey, signingPubKey []byte, replaceActive bool) (records.Peer, error) {
	var out records.Peer
	err := r.update(KindReserved, func(m *mutation) error {
		if m.cluster == nil {
			return ErrNotInitialized
		}
		p, known := m.s.byEndpoint(publicEndpoint)
		if known && p.State == records.StateActive && !replaceActive {
			out = p
			return ErrAlreadyActive
		}
		if known && p.Role != role {
			return fmt.Errorf("%w: %s is a %s", ErrConflict, publicEndpoint, p.Role)
		}
		if other, taken := m.s.byName(name); taken && name != "" && other.VPNIP != p.VPNIP {
			return fmt.Errorf("%w: name %q is already used by %s (%s)", ErrConflict, name, other.VPNIP, other.PublicEndpoint)
		}
		if err := m.s.checkKeys(p.VPNIP, vpnPubKey, signingPubKey); err != nil {
			return err
		}
		if !known {
			ip, err := m.allocate()
			if err != nil {
				return err
			}
			p = records.Peer{Role: role, VPNIP: ip, PublicEndpoint: publicEndpoint}
		}
		p.Registered, p.ReevePubKey, p.RegisteredAt, p.RegistrationError = false, nil, time.Time{}, ""
		p.Name, p.WGPubKey, p.State, p.LastError = name, vpnPubKey, records.StatePending, ""
		m.detail = "at " + publicEndpoint
		out = m.put(p)
		return nil
	})
	if err != nil && !errors.Is(err, ErrAlreadyActive) {
		return records.Peer{}, fmt.Errorf("reserving %s: %w", publicEndpoint, err)
	}
	return out, err
}

// checkKeys refuses keys that another active peer holds (a copied state
// directory) or that a removed peer held (removed keys stay refused).
func (s *state) checkKeys(self netip.Addr, vpnPubKey, signingPubKey []byte) error {
	for _, k := range []struct {
		index map[string]netip.Addr
		key   []byte
		what  string
	}{{s.byVPNKey, vpnPubKey, "WireGuard"}, {s.bySigningKey, signingPubKey, "signing"}} {
		if len(k.key) == 0 {
			continue
		}
		ip, ok := k.index[string(k.key)]
		if !ok || ip == self {
			continue
		}
		other := s.peers[ip]
		if other.State == records.StateRemoved {
			return fmt.Errorf("%w: its %s key is the key of %s (%s), which was removed from the cluster, and removed keys are refused; restart that machine's fabricd with an empty state directory to give it new keys",
				ErrConflict, k.what, other.Name, other.VPNIP)
		}
		return fmt.Errorf("%w: %s (%s) already has the same %s key; was its state directory copied?", ErrConflict, other.Name, other.VPNIP, k.what)
	}
	return nil
}

// Activate marks the pending node (or coordinator) at ip active with its
// keys. Keys already held by another active peer, or by a removed one,
// give ErrConflict.
func (r *Registry) Activate(ip netip.Addr, a records.Activated) (records.Peer, error) {
	var out records.Peer
	err := r.update(KindActivated, func(m *mutation) error {
		p, ok := m.peer(ip)
		if !ok || p.Role == records.RoleAdmin || p.State == records.StateRemoved ||
			(p.Role == records.RoleCoordinator && p.State != records.StatePending) {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		if p.Role == records.RoleCoordinator && len(a.TLSPin) == 0 {
			return fmt.Errorf("coordinator %s reported no TLS certificate pin", a.Name)
		}
		if len(a.WGPubKey) != 32 || len(a.SigningPubKey) != ed25519.PublicKeySize {
			return fmt.Errorf("node reported keys of %d and %d bytes, want 32 and %d", len(a.WGPubKey), len(a.SigningPubKey), ed25519.PublicKeySize)
		}
		if err := m.s.checkKeys(ip, a.WGPubKey, a.SigningPubKey); err != nil {
			return err
		}
		p.Name, p.Horde, p.WGEndpoint = a.Name, a.Horde, a.WGEndpoint
		p.WGPubKey, p.SigningPubKey = a.WGPubKey, a.SigningPubKey
		if p.Role == records.RoleCoordinator {
			p.TLSPin = a.TLSPin
		}
		p.State, p.LastError = records.StateActive, ""
		m.detail = fmt.Sprintf("horde %s, WireGuard at %s", a.Horde, a.WGEndpoint)
		out = m.put(p)
		return nil
	})
	if err != nil {
		return records.Peer{}, fmt.Errorf("activating %s: %w", ip, err)
	}
	return out, nil
}

// Fail records why the activation of the node at publicEndpoint failed,
// reserving its VPN IP if it has none yet, so a retry reuses it.
func (r *Registry) Fail(publicEndpoint, reason string) (records.Peer, error) {
	var out records.Peer
	err := r.update(KindFailed, func(m *mutation) error {
		if m.cluster == nil {
			return ErrNotInitialized
		}
		p, known := m.s.byEndpoint(publicEndpoint)
		if known && p.State == records.StateActive {
			return fmt.Errorf("%w: cannot mark it failed", ErrAlreadyActive)
		}
		if !known {
			ip, err := m.allocate()
			if err != nil {
				return err
			}
			p = records.Peer{Role: records.RoleNode, VPNIP: ip, PublicEndpoint: publicEndpoint}
		}
		p.State, p.LastError = records.StateFailed, reason
		m.detail = reason
		out = m.put(p)
		return nil
	})
	if err != nil {
		return records.Peer{}, fmt.Errorf("recording failure of %s: %w", publicEndpoint, err)
	}
	return out, nil
}

// Remove removes the node at ip, whatever its state (pending, failed or
// active), in one revision: its record becomes a tombstone (its VPN IP is
// retired and never given again, its keys are refused from then on) and
// its service records are deleted. It returns the record as it was.
func (r *Registry) Remove(ip netip.Addr) (records.Peer, error) {
	var out records.Peer
	err := r.update(KindRemoved, func(m *mutation) error {
		p, ok := m.peer(ip)
		switch {
		case !ok:
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		case p.State == records.StateRemoved:
			return fmt.Errorf("%w: %s (%s) was already removed", ErrRemoved, p.Name, ip)
		case p.Role == records.RoleAdmin:
			return fmt.Errorf("%w: %s (%s) is an admin, which cannot be removed", ErrConflict, p.Name, ip)
		case p.Role == records.RoleCoordinator && p.State == records.StateActive && m.s.activeCoordinators() == 1:
			return fmt.Errorf("%w: %s (%s) is the cluster's only coordinator, which cannot be removed", ErrConflict, p.Name, ip)
		}
		out = p
		m.detail = fmt.Sprintf("was %s", p.State)
		p.RevokedKeys = revokedKeys(p, m.s.services[ip])
		p.State, p.Registered, p.LastError = records.StateRemoved, false, ""
		m.put(p)
		if _, has := m.s.services[ip]; has {
			m.setServices(ip, nil)
		}
		if _, has := m.s.liveness[ip]; has {
			m.liveness[ip] = nil
		}
		return nil
	})
	if err != nil {
		return records.Peer{}, fmt.Errorf("removing %s: %w", ip, err)
	}
	return out, nil
}

// SetWGEndpoint records the WireGuard endpoint an active peer reports
// (its WireGuard port changed). The same endpoint changes nothing. A
// node's endpoint must be at the IP of its public endpoint: otherwise a
// node could point every peer's handshakes at any address. An admin has
// no public endpoint and roams: its endpoint may be any IP:port (the admin
// holds the cluster's keys anyway), and "" says it has none its peers can
// reach.
func (r *Registry) SetWGEndpoint(ip netip.Addr, wgEndpoint string) error {
	ap, err := netip.ParseAddrPort(wgEndpoint)
	badEndpoint := err != nil || ap.Port() == 0
	err = r.update(KindEndpoint, func(m *mutation) error {
		p, ok := m.peer(ip)
		if !ok || p.State != records.StateActive {
			return fmt.Errorf("%w %s", ErrUnknownPeer, ip)
		}
		admin := p.Role == records.RoleAdmin
		if badEndpoint && !(admin && wgEndpoint == "") {
			return fmt.Errorf("wireguard endpoint %q: want IP:PORT", wgEndpoint)
		}
		if p.WGEndpoint == wgEndpoint {
			return errNoChange
		}
		if pub, err := netip.ParseAddrPort(p.PublicEndpoint); !admin && (err != nil || pub.Addr() != ap.Addr()) {
			return fmt.Errorf("%w: %s is not at the IP of its public endpoint %s", ErrConflict, wgEndpoint, p.PublicEndpoint)
		}
		m.detail = fmt.Sprintf("%s -> %s", cmp.Or(p.WGEndpoint, "none"), cmp.Or(wgEndpoint, "none"))
		p.WGEndpoint = wgEndpoint
		m.put(p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording the wireguard endpoint of %s: %w", ip, err)
	}
	return nil
}

// revokedKeys are the keys of a removed peer that stay refused: its
// reeve's and its service clients' (its WireGuard and signing keys stay in
// the tombstone's own fields).
func revokedKeys(p records.Peer, s records.Services) [][]byte {
	var out [][]byte
	if len(p.ReevePubKey) > 0 {
		out = append(out, p.ReevePubKey)
	}
	for _, c := range s.Clients {
		out = append(out, c.PubKey)
	}
	return out
}

// activeCoordinators counts the active coordinators.
func (s *state) activeCoordinators() int {
	n := 0
	for _, p := range s.peers {
		if p.Role == records.RoleCoordinator && p.State == records.StateActive {
			n++
		}
	}
	return n
}
