package pubapi

import (
	"context"
	"errors"
	"net/netip"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Coordinators is what the server needs of the peer for several
// coordinators.
type Coordinators interface {
	AddCoordinator(ctx context.Context, publicEndpoint string) (records.Peer, error)
	JoinAsCoordinator(ctx context.Context, req core.JoinRequest) (records.Activated, error)
}

func (s *Server) coordinators() (Coordinators, error) {
	c, ok := s.core.(Coordinators)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this peer cannot run several coordinators")
	}
	return c, nil
}

// AddCoordinator implements pubapi.
func (s *Server) AddCoordinator(ctx context.Context, req *pubapipb.AddCoordinatorRequest) (*pubapipb.AddCoordinatorResponse, error) {
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return nil, err
	}
	c, err := s.coordinators()
	if err != nil {
		return nil, err
	}
	p, err := c.AddCoordinator(ctx, req.GetPublicEndpoint())
	if errors.Is(err, core.ErrNeedsSharedStore) {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return &pubapipb.AddCoordinatorResponse{Coordinator: PeerToProto(p, Liveness{CoordinatorHandshakeAge: -1})}, nil
}

// JoinAsCoordinator implements pubapi.
func (s *Server) JoinAsCoordinator(ctx context.Context, req *pubapipb.JoinAsCoordinatorRequest) (*pubapipb.ActivateAsNodeResponse, error) {
	if _, err := authconn.RequireMethod(ctx, bootstrapOnly...); err != nil {
		return nil, err
	}
	c, err := s.coordinators()
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(req.GetVpnIp())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "vpn ip %q: %v", req.GetVpnIp(), err)
	}
	a, err := c.JoinAsCoordinator(ctx, core.JoinRequest{ClusterID: req.GetClusterId(), VPNIP: ip})
	if errors.Is(err, core.ErrNeedsSharedStore) {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return &pubapipb.ActivateAsNodeResponse{
		Name: a.Name, Horde: a.Horde, VpnPubKey: a.WGPubKey, SigningPubKey: a.SigningPubKey, WgEndpoint: a.WGEndpoint, TlsPin: a.TLSPin,
	}, nil
}

// JoinAsCoordinator implements core.CoordinatorJoiner.
func (a *NodeActivator) JoinAsCoordinator(ctx context.Context, publicEndpoint string, req core.JoinRequest) (records.Activated, error) {
	var out records.Activated
	err := a.call(publicEndpoint, func(c *Client) error {
		resp, err := c.PubAPIClient.JoinAsCoordinator(ctx, &pubapipb.JoinAsCoordinatorRequest{ClusterId: req.ClusterID, VpnIp: req.VPNIP.String()})
		if err != nil {
			return err
		}
		out = records.Activated{
			Name: resp.GetName(), Horde: resp.GetHorde(), WGEndpoint: resp.GetWgEndpoint(),
			WGPubKey: resp.GetVpnPubKey(), SigningPubKey: resp.GetSigningPubKey(), TLSPin: resp.GetTlsPin(),
		}
		return nil
	})
	return out, err
}

var _ core.CoordinatorJoiner = (*NodeActivator)(nil)
