package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"
)

// ErrNoQuorum is matched (errors.Is) by the errors of a store whose etcd
// cannot answer: fewer than a majority of its members are reachable, or
// none of them knows a leader.
var ErrNoQuorum = errors.New("etcd has no quorum")

// probeTimeout bounds the look at the members after a failure.
const probeTimeout = 2 * time.Second

// NoQuorumError says which members of etcd answered when an operation
// failed for want of a quorum.
type NoQuorumError struct {
	Reachable, Members int
	// Endpoints says, per endpoint, whether it answered and whether it
	// knew a leader.
	Endpoints []string
	op        string
	err       error
	last      string // the etcd client's last error, if err is a timeout
}

func (e *NoQuorumError) Error() string {
	what := "has no quorum"
	if e.Reachable > e.Members/2 {
		what = "has no leader" // a majority answers, but no election has finished
	}
	msg := fmt.Sprintf("etcd %s: %d of %d members reachable (%s): %s: %v",
		what, e.Reachable, e.Members, strings.Join(e.Endpoints, "; "), e.op, e.err)
	if e.last != "" {
		msg += " (the etcd client's last error: " + e.last + ")"
	}
	return msg
}

func (e *NoQuorumError) Unwrap() error { return e.err }

func (e *NoQuorumError) Is(target error) bool { return target == ErrNoQuorum }

// diagnose asks every endpoint for its status. It returns nil when a
// majority answers and one of them knows a leader: then the failure was
// not for want of a quorum.
func (s *Store) diagnose() *NoQuorumError {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	endpoints := s.client.Endpoints()
	states := make([]string, len(endpoints))
	up := make([]bool, len(endpoints))
	leader := false
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() {
			// A TCP connection first: it says at once why a member that
			// is down cannot be reached, which the client's retries of
			// Status hide behind a timeout.
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", ep)
			if err != nil {
				mu.Lock()
				states[i] = fmt.Sprintf("%s unreachable: %v", ep, errors.Unwrap(err))
				mu.Unlock()
				return
			}
			_ = conn.Close()
			resp, err := s.client.Status(ctx, ep)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				states[i] = fmt.Sprintf("%s accepts connections but does not answer as etcd (TLS settings?): %s", ep, status.Convert(err).Message())
			case resp.Leader == 0:
				states[i], up[i] = ep+" up, no leader", true
			default:
				states[i], up[i], leader = fmt.Sprintf("%s up, leader %x", ep, resp.Leader), true, true
			}
		})
	}
	wg.Wait()
	reachable := 0
	for _, ok := range up {
		if ok {
			reachable++
		}
	}
	members := len(endpoints)
	if reachable > 0 {
		// The members etcd knows, which the endpoints given may not all be.
		if resp, err := s.client.MemberList(ctx, clientv3.WithSerializable()); err == nil {
			members = max(members, len(resp.Members))
		}
	}
	if leader && reachable > members/2 {
		return nil
	}
	return &NoQuorumError{Reachable: reachable, Members: members, Endpoints: states}
}
