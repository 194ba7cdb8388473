package pubapi

import (
	"context"
	"errors"
	"net/netip"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RemoveNode implements pubapi.
func (s *Server) RemoveNode(ctx context.Context, req *pubapipb.RemoveNodeRequest) (*pubapipb.RemoveNodeResponse, error) {
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return nil, err
	}
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node: give a name, a VPN IP or a public endpoint IP:PORT")
	}
	r, err := s.core.RemoveNode(ctx, req.GetNode())
	if err != nil {
		return nil, statusOf(err)
	}
	reg, _ := s.core.Registry()
	resp := &pubapipb.RemoveNodeResponse{Removed: PeerToProto(r.Removed, Liveness{CoordinatorHandshakeAge: -1}), Told: r.Told}
	if r.TellErr != nil {
		resp.ToldError = r.TellErr.Error()
	}
	if p, ok := reg.Peer(r.Removed.VPNIP); ok {
		resp.Revision = p.Revision
	}
	return resp, nil
}

// Leave implements pubapi.
func (s *Server) Leave(ctx context.Context, req *pubapipb.LeaveRequest) (*pubapipb.LeaveResponse, error) {
	if _, err := authconn.RequireMethod(ctx, bootstrapOnly...); err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(req.GetNodeVpnIp())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node vpn ip %q: %v", req.GetNodeVpnIp(), err)
	}
	err = s.core.LeaveCluster(ctx, core.LeaveRequest{ClusterID: req.GetClusterId(), NodeVPNIP: ip}, req.GetSignature())
	if err != nil {
		return nil, statusOf(err)
	}
	return &pubapipb.LeaveResponse{}, nil
}

// Events implements pubapi.
func (s *Server) Events(req *pubapipb.EventsRequest, stream grpc.ServerStreamingServer[pubapipb.Event]) error {
	ctx := stream.Context()
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return err
	}
	co := s.coordinator()
	if co == nil {
		return status.Error(codes.FailedPrecondition, "this peer is not an active coordinator")
	}
	err := co.Events(ctx, req.GetSince(), req.GetFollow(), func(e Event) error {
		pe := &pubapipb.Event{Revision: e.Revision, At: e.At.UnixMilli(), Kind: e.Kind, Node: e.Node, Detail: e.Detail}
		if e.VPNIP.IsValid() {
			pe.VpnIp = e.VPNIP.String()
		}
		return stream.Send(pe)
	})
	switch {
	case err == nil || ctx.Err() != nil:
		return nil
	case errors.Is(err, ErrEventsCompacted):
		return status.Errorf(codes.OutOfRange, "events after revision %d: %v", req.GetSince(), err)
	case errors.Is(err, ErrEventsBehind):
		return status.Error(codes.Aborted, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err // the stream's own
	}
	return status.Error(codes.Internal, err.Error())
}
