package pubapi

import (
	"context"
	"errors"
	"io"

	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Relay sends an admin's file through the cluster (the coordinator's
// pastiche relay).
type Relay interface {
	Send(ctx context.Context, from, to, name string, size int64, body io.Reader) (RelayResult, error)
}

// RelayResult is what the target of a relayed file stored.
type RelayResult struct {
	// From and To are the sending and the receiving endpoint.
	From, To string
	Name     string
	Size     int64
	// SHA256 is the digest the target computed over what it stored.
	SHA256 [32]byte
}

// PasticheSend implements pubapi: it relays the admin's file to the
// pastiche of the source node.
func (s *Server) PasticheSend(stream grpc.ClientStreamingServer[pubapipb.PasticheSendRequest, pubapipb.PasticheSendResponse]) error {
	ctx := stream.Context()
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return err
	}
	var relay Relay
	if s.cfg.Relay != nil {
		relay = s.cfg.Relay()
	}
	if relay == nil {
		return status.Error(codes.FailedPrecondition, "this peer is not an active coordinator with pastiche")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message must be the header")
	}
	res, err := relay.Send(ctx, h.GetFrom(), h.GetTo(), h.GetName(), h.GetSize(), &chunkReader{stream: stream})
	if err != nil {
		return s.explainRefusal(err, h.GetFrom(), h.GetTo())
	}
	return stream.SendAndClose(&pubapipb.PasticheSendResponse{
		From: res.From, To: res.To, Name: res.Name, Size: res.Size, Sha256: res.SHA256[:],
	})
}

// explainRefusal adds the hordes of from and to to a refusal when they
// differ, the usual reason: the source's view only says the target is not
// among the endpoints it may reach.
func (s *Server) explainRefusal(err error, from, to string) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return err
	}
	reg, ok := s.cfg.Core.Registry()
	if !ok {
		return err
	}
	src, okSrc := reg.PeerByName(from)
	dst, okDst := reg.PeerByName(to)
	if !okSrc || !okDst || src.Horde == dst.Horde {
		return err
	}
	return status.Errorf(codes.PermissionDenied, "%s (horde %s) and %s (horde %s) are in different hordes and no rule lets pastiche reach pastiche across hordes: %s",
		from, src.Horde, to, dst.Horde, st.Message())
}

// chunkReader reads the chunks of a PasticheSend stream as one byte stream.
type chunkReader struct {
	stream grpc.ClientStreamingServer[pubapipb.PasticheSendRequest, pubapipb.PasticheSendResponse]
	buf    []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		if msg.GetHeader() != nil {
			return 0, errors.New("a second header in the stream")
		}
		r.buf = msg.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
