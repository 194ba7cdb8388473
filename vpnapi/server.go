package vpnapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Registry is what the server needs of the coordinator's registry.
type Registry interface {
	Changes(since uint64) (rev uint64, full bool, changed []registry.Peer)
	Wait(ctx context.Context, after uint64) (uint64, error)
	ReportApplied(ip netip.Addr, rev uint64, unixNow int64)
	LookupSigningKey(signingPubKey []byte) (registry.Peer, bool)
}

// DefaultHoldTime is how long WatchUpdates waits for a change.
const DefaultHoldTime = 25 * time.Second

// Server implements the vpnapi.
type Server struct {
	vpnapipb.UnimplementedVPNAPIServer
	reg      Registry
	holdTime time.Duration
	now      func() time.Time
}

// NewServer returns a server over reg; holdTime 0 means DefaultHoldTime.
func NewServer(reg Registry, holdTime time.Duration) *Server {
	if holdTime <= 0 {
		holdTime = DefaultHoldTime
	}
	return &Server{reg: reg, holdTime: holdTime, now: time.Now}
}

// LookupSigningKey is the authconn server hook: it accepts the keys of
// active nodes and the coordinator, and names them by VPN IP.
func LookupSigningKey(reg Registry) func(ed25519.PublicKey) (string, error) {
	return func(pubKey ed25519.PublicKey) (string, error) {
		p, ok := reg.LookupSigningKey(pubKey)
		if !ok || (p.Role != registry.RoleNode && p.Role != registry.RoleCoordinator) {
			return "", errors.New("not an active node of this cluster")
		}
		return p.VPNIP.String(), nil
	}
}

// caller returns the VPN IP of the calling node.
func caller(ctx context.Context) (netip.Addr, error) {
	info, err := authconn.RequireMethod(ctx, authconn.MethodSignature)
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := netip.ParseAddr(info.Identity)
	if err != nil {
		return netip.Addr{}, status.Errorf(codes.PermissionDenied, "connection identity %q is not a node", info.Identity)
	}
	return ip, nil
}

// WatchUpdates implements vpnapi.
func (s *Server) WatchUpdates(ctx context.Context, req *vpnapipb.WatchUpdatesRequest) (*vpnapipb.WatchUpdatesResponse, error) {
	ip, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	applied := req.GetAppliedRevision()
	s.reg.ReportApplied(ip, applied, s.now().Unix())
	rev, full, changed := s.reg.Changes(applied)
	if !full && rev <= applied {
		// Nothing new: hold the call until something changes.
		hold, cancel := context.WithTimeout(ctx, s.holdTime)
		defer cancel()
		if _, err := s.reg.Wait(hold, applied); err != nil && ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		rev, full, changed = s.reg.Changes(applied)
	}
	resp := &vpnapipb.WatchUpdatesResponse{Revision: rev, Full: full}
	for _, p := range changed {
		resp.Peers = append(resp.Peers, PeerToProto(p))
	}
	return resp, nil
}

// PeerToProto converts a registry record.
func PeerToProto(p registry.Peer) *vpnapipb.Peer {
	return &vpnapipb.Peer{
		Name: p.Name, Role: string(p.Role), VpnIp: p.VPNIP.String(), WgEndpoint: p.WGEndpoint,
		WgPubKey: p.WGPubKey, SigningPubKey: p.SigningPubKey, Horde: p.Horde, Revision: p.Revision,
		State: string(p.State),
	}
}

// PeerFromProto converts back.
func PeerFromProto(p *vpnapipb.Peer) (registry.Peer, error) {
	ip, err := netip.ParseAddr(p.GetVpnIp())
	if err != nil {
		return registry.Peer{}, fmt.Errorf("peer %q: vpn ip: %w", p.GetName(), err)
	}
	return registry.Peer{
		Name: p.GetName(), Role: registry.Role(p.GetRole()), VPNIP: ip, WGEndpoint: p.GetWgEndpoint(),
		WGPubKey: p.GetWgPubKey(), SigningPubKey: p.GetSigningPubKey(), Horde: p.GetHorde(),
		Revision: p.GetRevision(), State: registry.State(p.GetState()),
	}, nil
}
