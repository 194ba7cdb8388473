package coordinator

import (
	"context"
	"crypto/ed25519"

	"fmt"
	"net/netip"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StewardServer is the steward's endpoint: reeves replace their node's
// service records with signed calls (keyId reeve@<node>).
type StewardServer struct {
	vpnapipb.UnimplementedStewardServer
	Registry ServiceRecords
}

// ServiceRecords is what the steward needs of the registry.
type ServiceRecords interface {
	PeerByName(name string) (records.Peer, bool)
	SetServices(ip netip.Addr, s records.Services) (bool, error)
	Revision() uint64
}

// reserved services are registered by fabric itself, never by a node.
var reserved = map[string]bool{
	serviceid.Reeve: true, serviceid.Steward: true, serviceid.Registry: true,
}

// UpdateServices implements the steward.
func (s *StewardServer) UpdateServices(ctx context.Context, req *vpnapipb.UpdateServicesRequest) (*vpnapipb.UpdateServicesResponse, error) {
	keyID, ok := signedrpc.Caller(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "unsigned call")
	}
	service, name, err := serviceid.Parse(keyID)
	if err != nil || service != serviceid.Reeve {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a reeve", keyID)
	}
	node, ok := s.Registry.PeerByName(name)
	if !ok || !node.Registered {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not registered", name)
	}
	svcs, err := servicesFromProto(req, node.Role == records.RoleCoordinator)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := s.Registry.SetServices(node.VPNIP, svcs); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &vpnapipb.UpdateServicesResponse{Revision: s.Registry.Revision()}, nil
}

// servicesFromProto checks and converts a node's services. Only the
// coordinator may have a fabric-admin client: the built-in rules let it
// reach pastiche on every node.
func servicesFromProto(req *vpnapipb.UpdateServicesRequest, coordinator bool) (records.Services, error) {
	var out records.Services
	if n, m := len(req.GetEndpoints()), len(req.GetClients()); n > serviceid.MaxPerPeer || m > serviceid.MaxPerPeer {
		return out, fmt.Errorf("%d endpoints and %d clients: a peer may have at most %d of each", n, m, serviceid.MaxPerPeer)
	}
	seen := map[string]bool{}
	for _, e := range req.GetEndpoints() {
		if err := checkService(e.GetService(), "endpoint", seen); err != nil {
			return out, err
		}
		if e.GetPort() == 0 || e.GetPort() > 65535 {
			return out, fmt.Errorf("endpoint %s: port %d out of range", e.GetService(), e.GetPort())
		}
		out.Endpoints = append(out.Endpoints, records.ServiceEndpoint{Service: e.GetService(), Port: uint16(e.GetPort())})
	}
	for _, c := range req.GetClients() {
		if err := checkService(c.GetService(), "client", seen); err != nil {
			return out, err
		}
		if c.GetService() == serviceid.FabricAdmin && !coordinator {
			return out, fmt.Errorf("client %s: only the coordinator has it", serviceid.FabricAdmin)
		}
		if len(c.GetPubKey()) != ed25519.PublicKeySize {
			return out, fmt.Errorf("client %s: public key has %d bytes, want %d", c.GetService(), len(c.GetPubKey()), ed25519.PublicKeySize)
		}
		out.Clients = append(out.Clients, records.ServiceClient{Service: c.GetService(), PubKey: c.GetPubKey()})
	}
	return out, nil
}

func checkService(name, kind string, seen map[string]bool) error {
	if err := serviceid.CheckService(name); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	if reserved[name] {
		return fmt.Errorf("%s %s: the name is reserved for fabric's own services", kind, name)
	}
	if seen[kind+name] {
		return fmt.Errorf("%s %s is listed twice", kind, name)
	}
	seen[kind+name] = true
	return nil
}

// StewardWhitelist is the steward endpoint's whitelist: every registered
// reeve, straight from the registry.
type StewardWhitelist struct {
	Registry interface {
		PeerByName(name string) (records.Peer, bool)
	}
}

// Lookup implements signedrpc.Whitelist.
func (w StewardWhitelist) Lookup(keyID string) (ed25519.PublicKey, error) {
	service, name, err := serviceid.Parse(keyID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", httpsig.ErrUnknownKey, err)
	}
	node, ok := w.Registry.PeerByName(name)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: no node %s", httpsig.ErrUnknownKey, name)
	case service != serviceid.Reeve:
		return nil, fmt.Errorf("%w: only reeves may call the steward", httpsig.ErrNotWhitelisted)
	case !node.Registered:
		return nil, fmt.Errorf("%w: node %s is not registered", httpsig.ErrUnknownKey, name)
	}
	return ed25519.PublicKey(node.ReevePubKey), nil
}
