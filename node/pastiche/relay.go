package pastiche

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"

	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Relay is the coordinator's side of `fabric pastiche send`: it streams a
// file to the pastiche of one node, as the coordinator's fabric-admin
// client, asking it to send the file on to the pastiche of another.
type Relay struct {
	Reeve ClientReeve
	// ClientID is the coordinator's fabric-admin client, fabric-admin@<coordinator>.
	ClientID string
}

// SendResult is what the target stored.
type SendResult struct {
	// From and To are the sending and the receiving endpoint,
	// pastiche@<node>.
	From, To string
	Name     string
	Size     int64
	// SHA256 is the digest the target computed over what it stored; Send
	// checked that it is the digest of what body held.
	SHA256 [sha256.Size]byte
}

// Send streams size bytes of body, in chunks, to the pastiche of node from,
// which sends them on to the pastiche of node to, where they are stored as
// name. Errors are gRPC status errors: PermissionDenied when the rules do not
// let fabric-admin reach from or from reach to, InvalidArgument for a bad
// name or a body that does not hold exactly size bytes (then nothing is
// stored), and the errors of the pastiches, with their codes, naming the one
// that failed. An error reading body is returned wrapped.
func (r Relay) Send(ctx context.Context, from, to, name string, size int64, body io.Reader) (SendResult, error) {
	hdr := &pastichepb.SendHeader{To: to, File: &pastichepb.FileHeader{Name: name, Size: size}}
	if err := checkHeader(hdr.File); err != nil {
		return SendResult{}, err
	}
	ep, err := lookup(ctx, r.Reeve, r.ClientID, from)
	if err != nil {
		return SendResult{}, err
	}
	conn, err := dial(r.Reeve, r.ClientID, ep)
	if err != nil {
		return SendResult{}, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := sha256.New()
	resp, err := sendStream(ctx, pastichepb.NewPasticheClient(conn), hdr, readerChunks(io.TeeReader(body, h), size))
	var se sourceError
	if errors.As(err, &se) {
		return SendResult{}, se.err
	}
	if err != nil {
		return SendResult{}, remoteError(ep.ID, err)
	}
	return result(ep.ID, resp, h.Sum(nil))
}

// sendStream runs one Send call. Cancel ctx after an error to cut the
// stream.
func sendStream(ctx context.Context, c pastichepb.PasticheClient, hdr *pastichepb.SendHeader, next chunks) (*pastichepb.SendResponse, error) {
	stream, err := c.Send(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&pastichepb.SendRequest{Msg: &pastichepb.SendRequest_Header{Header: hdr}})
	if err == nil {
		err = pump(next, func(b []byte) error {
			return stream.Send(&pastichepb.SendRequest{Msg: &pastichepb.SendRequest_Chunk{Chunk: b}})
		})
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.CloseAndRecv()
}

// result checks the target's answer against what was sent.
func result(from string, resp *pastichepb.SendResponse, sum []byte) (SendResult, error) {
	stored := resp.GetStored()
	if !bytes.Equal(stored.GetSha256(), sum) {
		return SendResult{}, status.Errorf(codes.DataLoss, "%s stored %s with SHA-256 %x, but %x was sent", resp.GetTarget(), stored.GetName(), stored.GetSha256(), sum)
	}
	res := SendResult{From: from, To: resp.GetTarget(), Name: stored.GetName(), Size: stored.GetSize()}
	copy(res.SHA256[:], sum)
	return res, nil
}
