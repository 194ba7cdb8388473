package pastiche

import (
	"context"
	"encoding/hex"
	"errors"
	"io"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// handler serves the Pastiche API of a Service.
type handler struct {
	pastichepb.UnimplementedPasticheServer
	s *Service
}

// requireCaller refuses the call unless the verified caller is a client of
// service.
func (h handler) requireCaller(ctx context.Context, method, service string) (string, error) {
	caller, ok := signedrpc.Caller(ctx)
	if !ok {
		return "", status.Errorf(codes.Unauthenticated, "%s: unsigned call", method)
	}
	if callerService, _, err := serviceid.Parse(caller); err != nil || callerService != service {
		h.s.log.Warn("call refused", "method", method, "caller", caller)
		return "", status.Errorf(codes.PermissionDenied, "%s of %s is for %s clients only, not %s", method, h.s.id, service, caller)
	}
	return caller, nil
}

// Put stores a file another pastiche streams in.
func (h handler) Put(stream pastichepb.Pastiche_PutServer) error {
	caller, err := h.requireCaller(stream.Context(), "Put", serviceid.Pastiche)
	if err != nil {
		return err
	}
	resp, err := h.s.store(stream)
	if err != nil {
		h.s.log.Warn("file not stored", "from", caller, "err", err)
		return err
	}
	h.s.log.Info("file stored", "file", resp.GetName(), "size", resp.GetSize(), "sha256", hex.EncodeToString(resp.GetSha256()), "from", caller)
	return stream.SendAndClose(resp)
}

// Stat describes a stored file to another pastiche.
func (h handler) Stat(ctx context.Context, req *pastichepb.StatRequest) (*pastichepb.StatResponse, error) {
	if _, err := h.requireCaller(ctx, "Stat", serviceid.Pastiche); err != nil {
		return nil, err
	}
	return stat(h.s.dir, req.GetName())
}

// store receives the header and the data of a Put stream and stores the
// file.
func (s *Service) store(stream pastichepb.Pastiche_PutServer) (*pastichepb.PutResponse, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, streamStartError(err)
	}
	hdr := first.GetHeader()
	if err := checkHeader(hdr); err != nil {
		return nil, err
	}
	sum, err := s.receive(hdr, putChunks(stream))
	if err != nil {
		return nil, err
	}
	return &pastichepb.PutResponse{Name: hdr.GetName(), Size: hdr.GetSize(), Sha256: sum}, nil
}

// receive writes the chunks of next to a temporary file and stores it as
// hdr says, or leaves nothing behind.
func (s *Service) receive(hdr *pastichepb.FileHeader, next chunks) ([]byte, error) {
	in, err := create(s.dir, hdr)
	if err != nil {
		return nil, err
	}
	for {
		chunk, err := next()
		if errors.Is(err, io.EOF) {
			return in.commit()
		}
		if err == nil {
			err = in.write(chunk)
		}
		if err != nil {
			in.abort()
			return nil, err
		}
	}
}

// Send streams a file from the coordinator's fabric-admin on to the
// pastiche of another node.
func (h handler) Send(stream pastichepb.Pastiche_SendServer) error {
	if _, err := h.requireCaller(stream.Context(), "Send", serviceid.FabricAdmin); err != nil {
		return err
	}
	resp, err := h.s.forward(stream)
	if err != nil {
		h.s.log.Warn("file not sent", "err", err)
		return err
	}
	stored := resp.GetStored()
	h.s.log.Info("file sent", "to", resp.GetTarget(), "file", stored.GetName(), "size", stored.GetSize(), "sha256", hex.EncodeToString(stored.GetSha256()))
	return stream.SendAndClose(resp)
}

// forward receives the header of a Send stream and streams the file on to
// the target, as the data arrives.
func (s *Service) forward(stream pastichepb.Pastiche_SendServer) (*pastichepb.SendResponse, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, streamStartError(err)
	}
	hdr := first.GetHeader()
	if err := checkHeader(hdr.GetFile()); err != nil {
		return nil, err
	}
	ctx := stream.Context()
	target, err := s.target(ctx, hdr.GetTo())
	if err != nil {
		return nil, err
	}
	stored, err := putTo(ctx, s.reeve, s.id, target, hdr.GetFile(), sendChunks(stream))
	if err != nil {
		return nil, err
	}
	return &pastichepb.SendResponse{Target: target.ID, Stored: stored}, nil
}

// streamStartError explains a stream that failed before its header.
func streamStartError(err error) error {
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "empty stream: the first message must be the header")
	}
	return err
}

// putChunks reads the data of a Put stream.
func putChunks(stream pastichepb.Pastiche_PutServer) chunks {
	return func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		c, ok := m.GetMsg().(*pastichepb.PutRequest_Chunk)
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "a second header after the first")
		}
		return c.Chunk, nil
	}
}

// sendChunks reads the data of a Send stream.
func sendChunks(stream pastichepb.Pastiche_SendServer) chunks {
	return func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		c, ok := m.GetMsg().(*pastichepb.SendRequest_Chunk)
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "a second header after the first")
		}
		return c.Chunk, nil
	}
}
