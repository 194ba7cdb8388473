package signedrpc

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// signedServerStream checks the envelope of every message the client sends
// before the handler sees it.
type signedServerStream struct {
	grpc.ServerStream
	ctx     context.Context
	s       *server
	method  string
	keyID   string
	pub     ed25519.PublicKey
	chain   chain
	n       int   // messages received
	refused error // the status that ended the stream, once a message is refused
}

func (w *signedServerStream) Context() context.Context { return w.ctx }

func (w *signedServerStream) RecvMsg(m any) error {
	if w.refused != nil {
		return w.refused
	}
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "receiving into %T: not a proto message", m)
	}
	w.s.codec.expect(m)
	err := w.ServerStream.RecvMsg(m)
	env := w.s.codec.collect(m)
	if err != nil {
		return err
	}
	w.n++
	next, payload, err := open(w.chain, w.pub, env)
	if err != nil {
		return w.refuse(err)
	}
	w.chain = next
	if err := proto.Unmarshal(payload, msg); err != nil {
		return status.Errorf(codes.InvalidArgument, "message %d of the stream: decoding %T: %v", w.n, m, err)
	}
	return nil
}

// refuse ends the stream: this and every later RecvMsg, and the call
// itself, fail with codes.Unauthenticated.
func (w *signedServerStream) refuse(reason error) error {
	w.refused = status.Error(codes.Unauthenticated, fmt.Sprintf("signature rejected: message %d of the stream from keyId %q %v", w.n, w.keyID, reason))
	w.s.log.Warn("signed stream message refused", "method", w.method, "peer", peerAddr(w.ctx), "keyId", w.keyID, "message", w.n, "err", reason)
	return w.refused
}
