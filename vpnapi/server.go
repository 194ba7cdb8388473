package vpnapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Registry is what the server needs of the coordinator's registry.
type Registry interface {
	Changes(since uint64) (rev uint64, full bool, changed []records.Peer)
	Wait(ctx context.Context, after uint64) (uint64, error)
	ReportApplied(ip netip.Addr, rev uint64, unixNow int64)
	LookupSigningKey(signingPubKey []byte) (records.Peer, bool)
	SSHUsersSince(since uint64) ([]records.SSHUser, bool)
}

// DefaultHoldTime is how long WatchUpdates waits for a change.
const DefaultHoldTime = 25 * time.Second

// Registrar runs the registration handshake of a node's reeve.
type Registrar interface {
	Register(ctx context.Context, nodeIP netip.Addr, reevePubKey []byte) error
}

// Views gives each node's service view as of a revision at least the
// registry's when called.
type Views interface {
	For(ctx context.Context, ip netip.Addr) (view view.View, rev uint64, ok bool, err error)
}

// Config is what NewServer needs.
type Config struct {
	Registry  Registry
	Registrar Registrar
	Views     Views
	// HoldTime of the long poll (default DefaultHoldTime).
	HoldTime time.Duration
}

// Server implements the vpnapi.
type Server struct {
	vpnapipb.UnimplementedVPNAPIServer
	cfg Config
	now func() time.Time

	mu   sync.Mutex
	sent map[netip.Addr]sentView // the view last sent to each node
}

// sentView is a view as sent in the answer at revision rev.
type sentView struct {
	rev  uint64
	view view.View
}

// NewServer returns a vpnapi server.
func NewServer(cfg Config) *Server {
	if cfg.HoldTime <= 0 {
		cfg.HoldTime = DefaultHoldTime
	}
	return &Server{cfg: cfg, now: time.Now, sent: map[netip.Addr]sentView{}}
}

// LookupSigningKey is the authconn server hook: it accepts the keys of
// active nodes and the coordinator, and names them by VPN IP.
func LookupSigningKey(reg Registry) func(ed25519.PublicKey) (string, error) {
	return func(pubKey ed25519.PublicKey) (string, error) {
		p, ok := reg.LookupSigningKey(pubKey)
		if !ok || (p.Role != records.RoleNode && p.Role != records.RoleCoordinator) {
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
	s.cfg.Registry.ReportApplied(ip, applied, s.now().Unix())
	if _, full, _ := s.cfg.Registry.Changes(applied); !full {
		// Nothing new yet: hold the call until something changes.
		hold, cancel := context.WithTimeout(ctx, s.cfg.HoldTime)
		defer cancel()
		if _, err := s.cfg.Registry.Wait(hold, applied); err != nil && ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	// The view first: its revision is the answer's. Peer records changed
	// since are sent too (and again next time), which is harmless.
	viewRev, view, err := s.view(ctx, ip, applied)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	rev, full, changed := s.cfg.Registry.Changes(applied)
	if s.cfg.Views != nil {
		rev = viewRev
	}
	resp := &vpnapipb.WatchUpdatesResponse{Revision: rev, Full: full, View: view}
	for _, p := range changed {
		resp.Peers = append(resp.Peers, PeerToProto(p))
	}
	// Users read after rev may be newer than rev: the node applies them
	// again next time, which changes nothing.
	if users, changed := s.cfg.Registry.SSHUsersSince(applied); changed {
		resp.SshUsers = SSHUsersToProto(users)
	}
	return resp, nil
}

// view returns the revision of ip's current view and its change since the
// one the node applied: nothing if unchanged, the difference if the node
// applied the view last sent to it, else the whole view (a new or restarted
// node or coordinator).
func (s *Server) view(ctx context.Context, ip netip.Addr, applied uint64) (uint64, *vpnapipb.View, error) {
	if s.cfg.Views == nil {
		return 0, nil, nil
	}
	cur, rev, ok, err := s.cfg.Views.For(ctx, ip)
	if err != nil || !ok {
		return rev, nil, err
	}
	s.mu.Lock()
	last, known := s.sent[ip]
	s.sent[ip] = sentView{rev: rev, view: cur}
	s.mu.Unlock()
	if !known || last.rev != applied {
		return rev, ViewToProto(cur, nil, true), nil
	}
	upserts, removed := view.Diff(last.view, cur)
	if len(removed) == 0 && len(upserts.Whitelist)+len(upserts.Endpoints)+len(upserts.Catalog) == 0 {
		return rev, nil, nil
	}
	return rev, ViewToProto(upserts, removed, false), nil
}

// Register implements vpnapi: the calling node's reeve offers its key.
func (s *Server) Register(ctx context.Context, req *vpnapipb.RegisterRequest) (*vpnapipb.RegisterResponse, error) {
	ip, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if s.cfg.Registrar == nil {
		return nil, status.Error(codes.Unavailable, "registration is not served here")
	}
	if err := s.cfg.Registrar.Register(ctx, ip, req.GetReevePubKey()); err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return &vpnapipb.RegisterResponse{}, nil
}

// PeerToProto converts a registry record.
func PeerToProto(p records.Peer) *vpnapipb.Peer {
	return &vpnapipb.Peer{
		Name: p.Name, Role: string(p.Role), VpnIp: p.VPNIP.String(), WgEndpoint: p.WGEndpoint,
		WgPubKey: p.WGPubKey, SigningPubKey: p.SigningPubKey, Horde: p.Horde, Revision: p.Revision,
		State: string(p.State),
	}
}

// PeerFromProto converts back.
func PeerFromProto(p *vpnapipb.Peer) (records.Peer, error) {
	ip, err := netip.ParseAddr(p.GetVpnIp())
	if err != nil {
		return records.Peer{}, fmt.Errorf("peer %q: vpn ip: %w", p.GetName(), err)
	}
	return records.Peer{
		Name: p.GetName(), Role: records.Role(p.GetRole()), VPNIP: ip, WGEndpoint: p.GetWgEndpoint(),
		WGPubKey: p.GetWgPubKey(), SigningPubKey: p.GetSigningPubKey(), Horde: p.GetHorde(),
		Revision: p.GetRevision(), State: records.State(p.GetState()),
	}, nil
}
