package pubapi

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/version"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Core is what the server needs of the peer.
type Core interface {
	Status() core.Status
	Registry() (core.Registry, bool)
	ActivateAsCoordinator(ctx context.Context, req core.CoordinatorActivation, emit func(core.Event)) (core.ActivationResult, error)
	ActivateAsNode(ctx context.Context, req core.NodeActivation) (records.Activated, error)
	ActivateAdditionalNodes(ctx context.Context, nodePublicEndpoints []string, emit func(core.Event)) (core.ActivationResult, error)
	SSHUsers() (uint64, []records.SSHUser, error)
	AddSSHUser(name string, keys []string) (core.SSHUserChange, error)
	RemoveSSHUser(name string, keys []string) (core.SSHUserChange, error)
	RemoveNode(ctx context.Context, target string) (core.Removal, error)
	LeaveCluster(ctx context.Context, req core.LeaveRequest, signature []byte) error
}

// Coordinator is what an active coordinator adds to the pubapi: the
// service catalog, the peers' liveness and the events.
type Coordinator interface {
	Catalog() (rules []string, endpoints, clients []ServiceRecord)
	Liveness(ip netip.Addr) Liveness
	// Events calls fn with every event after since (0: from the oldest
	// the change log holds) and, with follow, with every later one until
	// ctx ends. It fails with ErrEventsCompacted or ErrEventsBehind.
	Events(ctx context.Context, since uint64, follow bool, fn func(Event) error) error
}

// Errors of Coordinator.Events.
var (
	// ErrEventsCompacted: the change log no longer holds the events
	// after the revision asked for.
	ErrEventsCompacted = errors.New("the change log no longer holds those events")
	// ErrEventsBehind: the caller read the live events too slowly and
	// lost some; it may resume from the last revision it read.
	ErrEventsBehind = errors.New("fell behind the live events")
)

// ServiceRecord is an endpoint (with its port) or a client of a node.
type ServiceRecord struct {
	Service, Node string
	Port          uint16
}

// Liveness is what the coordinator knows of a peer's liveness.
type Liveness struct {
	Online                  bool
	LastSeen                time.Time
	Applied                 uint64
	CoordinatorHandshakeAge time.Duration
	// Watching names the coordinator whose watch the peer has open.
	Watching string
}

// Event is one event of the cluster.
type Event struct {
	Revision uint64
	At       time.Time
	Kind     string
	Node     string
	VPNIP    netip.Addr
	Detail   string
}

// Config is what NewServer needs.
type Config struct {
	Core Core
	// PublicEndpoint is where the pubapi listens.
	PublicEndpoint string
	// VPNAPIPort is where a coordinator serves the vpnapi on its VPN IP,
	// told to admins in GetState (0: not told).
	VPNAPIPort int
	// Coordinator and Relay (the relay of pastiche sends) return nil until
	// the peer is a coordinator.
	Coordinator func() Coordinator
	Relay       func() Relay
}

// Server implements the pubapi on top of core.
type Server struct {
	pubapipb.UnimplementedPubAPIServer
	cfg  Config
	core Core
}

// NewServer returns a pubapi server.
func NewServer(cfg Config) *Server {
	return &Server{cfg: cfg, core: cfg.Core}
}

// coordinator returns what the active coordinator adds, or nil.
func (s *Server) coordinator() Coordinator {
	if s.cfg.Coordinator == nil {
		return nil
	}
	return s.cfg.Coordinator()
}

// clusterStatus is ClusterStatus with what the coordinator adds, if any.
func (s *Server) clusterStatus(reg core.Registry) *pubapipb.ClusterStatus {
	return ClusterStatus(reg, s.coordinator())
}

// Credential methods of the calls.
var (
	bootstrapOnly    = []string{authconn.MethodBootstrap}
	adminOnly        = []string{authconn.MethodSignature}
	bootstrapOrAdmin = []string{authconn.MethodBootstrap, authconn.MethodSignature}
)

// GetState implements pubapi.
func (s *Server) GetState(ctx context.Context, _ *pubapipb.GetStateRequest) (*pubapipb.GetStateResponse, error) {
	info, err := authconn.RequireMethod(ctx, bootstrapOrAdmin...)
	if err != nil {
		return nil, err
	}
	st := s.core.Status()
	resp := &pubapipb.GetStateResponse{
		State: string(st.State), Failure: st.Failure, Name: st.Name, Horde: st.Horde,
		PublicEndpoint: s.cfg.PublicEndpoint, ClusterId: st.ClusterID, VpnPubKey: st.VPNPubKey[:],
		SigningPubKey: st.SigningPubKey, Version: version.Get().String(), StoreId: st.StoreID,
	}
	if st.VPNIP.IsValid() {
		resp.VpnIp = st.VPNIP.String()
		if st.State == core.StateCoordinator && s.cfg.VPNAPIPort > 0 {
			resp.VpnapiEndpoint = netip.AddrPortFrom(st.VPNIP, uint16(s.cfg.VPNAPIPort)).String()
		}
	}
	if reg, ok := s.core.Registry(); ok && info.Method == authconn.MethodSignature {
		resp.Cluster = s.clusterStatus(reg)
	}
	return resp, nil
}

// ActivateAsCoordinator implements pubapi.
func (s *Server) ActivateAsCoordinator(req *pubapipb.ActivateAsCoordinatorRequest, stream pubapipb.PubAPI_ActivateAsCoordinatorServer) error {
	ctx := stream.Context()
	if _, err := authconn.RequireMethod(ctx, bootstrapOnly...); err != nil {
		return err
	}
	cidr, err := records.ParseVPNCIDR(req.GetVpnCidr())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := s.core.ActivateAsCoordinator(ctx, core.CoordinatorActivation{
		VPNCIDR:             cidr,
		NodePublicEndpoints: req.GetNodePublicEndpoints(),
		AdminName:           req.GetAdminName(),
		AdminSigningPubKey:  req.GetAdminSigningPubKey(),
		AdminVPNPubKey:      req.GetAdminVpnPubKey(),
		Rules:               req.GetRules(),
		RulesName:           req.GetRulesName(),
		Users:               req.GetUsers(),
		UsersName:           req.GetUsersName(),
		AdminProof:          req.GetAdminProof(),
	}, streamEvents(stream))
	if err != nil {
		return statusOf(err)
	}
	return s.sendResult(stream, res)
}

// ActivateAdditionalNodes implements pubapi.
func (s *Server) ActivateAdditionalNodes(req *pubapipb.ActivateAdditionalNodesRequest, stream pubapipb.PubAPI_ActivateAdditionalNodesServer) error {
	ctx := stream.Context()
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return err
	}
	res, err := s.core.ActivateAdditionalNodes(ctx, req.GetNodePublicEndpoints(), streamEvents(stream))
	if err != nil {
		return statusOf(err)
	}
	return s.sendResult(stream, res)
}

type eventSender interface {
	Send(*pubapipb.ActivationEvent) error
}

// streamEvents sends core's events to the admin. A send error (the admin
// went away) is ignored: the activation goes on and is recorded.
func streamEvents(stream eventSender) func(core.Event) {
	return func(e core.Event) {
		switch {
		case e.Started != nil:
			_ = stream.Send(&pubapipb.ActivationEvent{Event: &pubapipb.ActivationEvent_Started{Started: &pubapipb.ActivationStarted{
				ClusterId: e.Started.Cluster.ID, VpnCidr: e.Started.Cluster.VPNCIDR.String(),
				AdminVpnIp: e.Started.Admin.VPNIP.String(), CoordinatorVpnIp: e.Started.Cluster.CoordinatorVPNIP.String(),
				Resumed: e.Started.Resumed,
			}}})
		case e.Progress != "":
			_ = stream.Send(&pubapipb.ActivationEvent{Event: &pubapipb.ActivationEvent_Progress{Progress: e.Progress}})
		case e.Node != nil:
			nr := &pubapipb.NodeResult{NodePublicEndpoint: e.Node.NodePublicEndpoint, Peer: PeerToProto(e.Node.Peer, Liveness{CoordinatorHandshakeAge: -1}),
				Retrying: e.Node.Retrying}
			if e.Node.Err != nil {
				nr.Error = e.Node.Err.Error()
			}
			_ = stream.Send(&pubapipb.ActivationEvent{Event: &pubapipb.ActivationEvent_Node{Node: nr}})
		}
	}
}

func (s *Server) sendResult(stream eventSender, res core.ActivationResult) error {
	reg, _ := s.core.Registry()
	return stream.Send(&pubapipb.ActivationEvent{Event: &pubapipb.ActivationEvent_Result{Result: &pubapipb.ActivationResult{
		Activated: int32(res.Activated),
		Failed:    int32(res.Failed),
		Cluster:   s.clusterStatus(reg),
	}}})
}

// ActivateAsNode implements pubapi.
func (s *Server) ActivateAsNode(ctx context.Context, req *pubapipb.ActivateAsNodeRequest) (*pubapipb.ActivateAsNodeResponse, error) {
	if _, err := authconn.RequireMethod(ctx, bootstrapOnly...); err != nil {
		return nil, err
	}
	act, err := nodeActivationFromProto(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	a, err := s.core.ActivateAsNode(ctx, act)
	if err != nil {
		return nil, statusOf(err)
	}
	return &pubapipb.ActivateAsNodeResponse{
		Name: a.Name, Horde: a.Horde, VpnPubKey: a.WGPubKey, SigningPubKey: a.SigningPubKey, WgEndpoint: a.WGEndpoint,
	}, nil
}

func nodeActivationFromProto(req *pubapipb.ActivateAsNodeRequest) (core.NodeActivation, error) {
	cidr, err := records.ParseVPNCIDR(req.GetVpnCidr())
	if err != nil {
		return core.NodeActivation{}, err
	}
	nodeIP, err := netip.ParseAddr(req.GetNodeVpnIp())
	if err != nil {
		return core.NodeActivation{}, errors.New("node vpn ip: " + err.Error())
	}
	co, err := coordinatorInfoFromProto(&pubapipb.CoordinatorInfo{
		Name: req.GetCoordinatorName(), VpnIp: req.GetCoordinatorVpnIp(), VpnPubKey: req.GetCoordinatorVpnPubKey(),
		WgEndpoint: req.GetCoordinatorWgEndpoint(), VpnapiEndpoint: req.GetCoordinatorVpnapiEndpoint(),
		TlsPin: req.GetCoordinatorTlsPin(), SigningPubKey: req.GetCoordinatorSigningPubKey(),
	})
	if err != nil {
		return core.NodeActivation{}, err
	}
	act := core.NodeActivation{ClusterID: req.GetClusterId(), VPNCIDR: cidr, NodeVPNIP: nodeIP, Coordinator: co}
	if n := len(req.GetOtherCoordinators()); n >= core.MaxCoordinators {
		return core.NodeActivation{}, fmt.Errorf("%d other coordinators, at most %d", n, core.MaxCoordinators-1)
	}
	for i, o := range req.GetOtherCoordinators() {
		co, err := coordinatorInfoFromProto(o)
		if err != nil {
			return core.NodeActivation{}, fmt.Errorf("other coordinator %d: %w", i+1, err)
		}
		act.OtherCoordinators = append(act.OtherCoordinators, co)
	}
	return act, nil
}

func coordinatorInfoFromProto(co *pubapipb.CoordinatorInfo) (core.CoordinatorInfo, error) {
	ip, err := netip.ParseAddr(co.GetVpnIp())
	if err != nil {
		return core.CoordinatorInfo{}, errors.New("coordinator vpn ip: " + err.Error())
	}
	key, err := wgtypes.NewKey(co.GetVpnPubKey())
	if err != nil {
		return core.CoordinatorInfo{}, errors.New("coordinator vpn public key: " + err.Error())
	}
	return core.CoordinatorInfo{
		Name: co.GetName(), VPNIP: ip, VPNPubKey: key, WGEndpoint: co.GetWgEndpoint(),
		VPNAPIEndpoint: co.GetVpnapiEndpoint(), TLSPin: co.GetTlsPin(), SigningPubKey: co.GetSigningPubKey(),
	}, nil
}

// statusOf maps core's errors to gRPC status codes.
func statusOf(err error) error {
	switch {
	case errors.Is(err, core.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, core.ErrWrongState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, core.ErrBusy):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, core.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

// ClusterStatus describes the cluster from the registry (nil if reg is nil)
// and what the coordinator adds (if co is not nil): liveness and services.
func ClusterStatus(reg core.Registry, co Coordinator) *pubapipb.ClusterStatus {
	if reg == nil {
		return nil
	}
	cl, _ := reg.Cluster()
	rev, peers := reg.Peers()
	out := &pubapipb.ClusterStatus{ClusterId: cl.ID, Revision: rev, VpnCidr: cl.VPNCIDR.String()}
	byName := map[string]*pubapipb.Peer{}
	for _, p := range peers {
		l := Liveness{CoordinatorHandshakeAge: -1}
		if co != nil {
			l = co.Liveness(p.VPNIP)
		}
		pp := PeerToProto(p, l)
		out.Peers = append(out.Peers, pp)
		if p.State == records.StateActive {
			byName[p.Name] = pp
		}
	}
	if co == nil {
		return out
	}
	rules, endpoints, clients := co.Catalog()
	out.Rules = rules
	for _, e := range endpoints {
		if pp := byName[e.Node]; pp != nil {
			pp.Endpoints = append(pp.Endpoints, &pubapipb.Service{Service: e.Service, Id: serviceid.ID(e.Service, e.Node),
				Address: netip.AddrPortFrom(netip.MustParseAddr(pp.VpnIp), e.Port).String()})
		}
	}
	for _, c := range clients {
		if pp := byName[c.Node]; pp != nil {
			pp.Clients = append(pp.Clients, &pubapipb.Service{Service: c.Service, Id: serviceid.ID(c.Service, c.Node)})
		}
	}
	return out
}

// PeerToProto converts a registry record and its liveness.
func PeerToProto(p records.Peer, l Liveness) *pubapipb.Peer {
	out := &pubapipb.Peer{
		Name: p.Name, Role: string(p.Role), PublicEndpoint: p.PublicEndpoint, WgEndpoint: p.WGEndpoint,
		WgPubKey: p.WGPubKey, SigningPubKey: p.SigningPubKey, Horde: p.Horde, State: string(p.State),
		LastError: p.LastError, Revision: p.Revision, AppliedRevision: l.Applied,
		Registered: p.Registered, RegistrationError: p.RegistrationError,
		Online: l.Online, CoordinatorHandshakeAgeMs: -1, Watching: l.Watching,
	}
	if p.Role == records.RoleCoordinator {
		out.TlsPin = p.TLSPin
	}
	if !l.LastSeen.IsZero() {
		out.LastSeen = l.LastSeen.Unix()
	}
	if l.CoordinatorHandshakeAge >= 0 {
		out.CoordinatorHandshakeAgeMs = l.CoordinatorHandshakeAge.Milliseconds()
	}
	if !p.RegisteredAt.IsZero() {
		out.RegisteredAt = p.RegisteredAt.UnixMilli()
	}
	if p.VPNIP.IsValid() {
		out.VpnIp = p.VPNIP.String()
	}
	return out
}
