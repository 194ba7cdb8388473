package pastiche

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ChunkSize is the size of the data messages pastiche sends.
const ChunkSize = 1 << 20

// MaxMessageSize bounds a message a pastiche endpoint receives: a chunk in
// its signed envelope, with room to spare.
const MaxMessageSize = ChunkSize + 64<<10

// chunks returns the next piece of a file's data, or io.EOF after the last.
type chunks func() ([]byte, error)

// sourceError is an error of the data source (not of the stream it feeds).
type sourceError struct{ err error }

func (e sourceError) Error() string { return e.err.Error() }
func (e sourceError) Unwrap() error { return e.err }

// pump sends every chunk of next with send. An error of next comes back as
// a sourceError; io.EOF from send (the receiver ended the stream) is
// returned as is, for the caller to fetch the receiver's status.
func pump(next chunks, send func([]byte) error) error {
	for {
		chunk, err := next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return sourceError{err}
		}
		if err := send(chunk); err != nil {
			return err
		}
	}
}

// lookup finds the pastiche endpoint of node among those the local client
// clientID may call; absent, the error is PermissionDenied and says so.
func lookup(ctx context.Context, r ClientReeve, clientID, node string) (reeve.Endpoint, error) {
	if node == "" {
		return reeve.Endpoint{}, status.Error(codes.InvalidArgument, "no node named")
	}
	eps, err := r.EndpointsUp(ctx, clientID, serviceid.Pastiche)
	if err != nil {
		return reeve.Endpoint{}, status.Errorf(codes.Internal, "endpoints of %s: %v", clientID, err)
	}
	want := serviceid.ID(serviceid.Pastiche, node)
	for _, ep := range eps {
		if ep.ID == want {
			return ep, nil
		}
	}
	return reeve.Endpoint{}, status.Errorf(codes.PermissionDenied,
		"%s may not send to %s: %s's pastiche is not among the endpoints its rules allow (different horde, unknown node, or its pastiche not registered yet?)",
		clientID, node, node)
}

// target finds the endpoint this pastiche may send to on node to.
func (s *Service) target(ctx context.Context, to string) (reeve.Endpoint, error) {
	if to == s.node {
		return reeve.Endpoint{}, status.Errorf(codes.InvalidArgument, "%s cannot send to its own node %s", s.id, to)
	}
	return lookup(ctx, s.reeve, s.id, to)
}

// dial connects to ep as the local client clientID, with signed calls.
func dial(r ClientReeve, clientID string, ep reeve.Endpoint) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///"+ep.Address, r.DialOptions(clientID)...)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "connecting to %s at %s: %v", ep.ID, ep.Address, err)
	}
	return conn, nil
}

// putTo streams a file to the endpoint target as clientID and returns
// target's answer. Errors of next are returned as they are; errors of the
// target keep their code and name the target. When put fails, the target has
// stored nothing: the stream is cut before it ends cleanly.
func putTo(ctx context.Context, r ClientReeve, clientID string, target reeve.Endpoint, hdr *pastichepb.FileHeader, next chunks) (*pastichepb.PutResponse, error) {
	conn, err := dial(r, clientID, target)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := putStream(ctx, pastichepb.NewPasticheClient(conn), hdr, next)
	var se sourceError
	if errors.As(err, &se) {
		return nil, se.err
	}
	if err != nil {
		return nil, remoteError(target.ID, err)
	}
	return resp, nil
}

// putStream runs one Put call. Cancel ctx after an error to cut the stream.
func putStream(ctx context.Context, c pastichepb.PasticheClient, hdr *pastichepb.FileHeader, next chunks) (*pastichepb.PutResponse, error) {
	stream, err := c.Put(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&pastichepb.PutRequest{Msg: &pastichepb.PutRequest_Header{Header: hdr}})
	if err == nil {
		err = pump(next, func(b []byte) error {
			return stream.Send(&pastichepb.PutRequest{Msg: &pastichepb.PutRequest_Chunk{Chunk: b}})
		})
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// After io.EOF from Send, the receiver's status is in CloseAndRecv.
	return stream.CloseAndRecv()
}

// remoteError is err, from the endpoint id, with its code kept and id named
// (unless the message starts with it already).
func remoteError(id string, err error) error {
	st := status.Convert(err)
	if strings.HasPrefix(st.Message(), id+" ") || strings.HasPrefix(st.Message(), id+":") {
		return st.Err()
	}
	return status.Errorf(st.Code(), "%s: %s", id, st.Message())
}

// readerChunks reads r in chunks of ChunkSize, and fails with
// InvalidArgument if r holds more or less than size bytes.
func readerChunks(r io.Reader, size int64) chunks {
	var n int64
	return func() ([]byte, error) {
		buf := make([]byte, ChunkSize)
		k, err := io.ReadFull(r, buf)
		n += int64(k)
		switch {
		case n > size:
			return nil, status.Errorf(codes.InvalidArgument, "the file is longer than its announced %d bytes", size)
		case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("reading the file: %w", err)
		case k > 0:
			return buf[:k], nil
		case n < size:
			return nil, status.Errorf(codes.InvalidArgument, "the file ended after %d of its announced %d bytes", n, size)
		}
		return nil, io.EOF
	}
}
