package authconn

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// authError is a failed authentication, as opposed to a network failure:
// the peer refused our credentials, did not prove its own, or presented a
// certificate that does not match the pin. Its text names the peer and never
// contains a secret.
type authError struct {
	peer string
	msg  string // appended to "peer <endpoint>"
}

func (e *authError) Error() string { return "peer " + e.peer + e.msg }

// maxReasonLen bounds the part of a server's refusal reason we repeat.
const maxReasonLen = 120

// sanitizeReason keeps a peer-supplied reason short and printable, so that a
// hostile peer cannot inject control characters into a terminal or logs.
func sanitizeReason(reason string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		case strings.ContainsRune(" .,:;()-_/'", r):
			return r
		}
		return -1
	}, reason)
	if len(clean) > maxReasonLen {
		clean = clean[:maxReasonLen]
	}
	if clean == "" {
		return "no reason given"
	}
	return clean
}

// maxFailures bounds how many distinct failures a failureLog remembers.
const maxFailures = 32

// failureLog remembers the texts of recent authentication failures, so that
// an RPC error carrying one of them can be explained.
type failureLog struct {
	mu   sync.Mutex
	msgs []string // oldest first, distinct
}

// record remembers msg as the most recent failure.
func (l *failureLog) record(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = slices.DeleteFunc(l.msgs, func(m string) bool { return m == msg })
	l.msgs = append(l.msgs, msg)
	if len(l.msgs) > maxFailures {
		l.msgs = slices.Delete(l.msgs, 0, len(l.msgs)-maxFailures)
	}
}

// match returns the most recent failure whose text appears in an RPC error
// message, as is or as quoted by grpc's connection error.
func (l *failureLog) match(rpcMsg string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, msg := range slices.Backward(l.msgs) {
		quoted := strconv.Quote(msg)
		if strings.Contains(rpcMsg, msg) || strings.Contains(rpcMsg, quoted[1:len(quoted)-1]) {
			return msg, true
		}
	}
	return "", false
}

// explain turns an Unavailable error caused by an authentication failure
// into PermissionDenied with the failure's text. Other errors pass through.
func (c *ClientCredentials) explain(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return err
	}
	msg, found := c.failures.match(st.Message())
	if !found {
		return err
	}
	return status.Error(codes.PermissionDenied, msg)
}

func (c *ClientCredentials) unaryInterceptor(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return c.explain(invoker(ctx, method, req, reply, cc, opts...))
}

// streamInterceptor explains errors from opening a stream, which is where a
// connection that could not be authenticated shows up.
func (c *ClientCredentials) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc,
	cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	stream, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, c.explain(err)
	}
	return stream, nil
}
