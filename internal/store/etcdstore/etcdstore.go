package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabricmesh/fabric/internal/store"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults of Options.
const (
	DefaultPrefix      = "/fabric/"
	DefaultTimeout     = 5 * time.Second
	DefaultDialTimeout = 5 * time.Second
	DefaultMaxAttempts = 64
	// DefaultElectionTTL is how long (in seconds) a leader that no longer
	// keeps its election's session alive stays the leader.
	DefaultElectionTTL = 10
)

// scanPage is how many keys one etcd range request of a Scan reads.
const scanPage = 500

// ErrConflict is returned by an Update whose function ran
// Options.MaxAttempts times and conflicted with another writer every time.
var ErrConflict = errors.New("etcd transaction conflicted with other writers")

// Options configures Open.
type Options struct {
	// Endpoints are the etcd members' client endpoints, HOST:PORT.
	Endpoints []string
	// Prefix is put before every key ("" means DefaultPrefix). It should
	// end with "/".
	Prefix string
	// TLS, if set, is used to reach etcd (with a client certificate when
	// it holds one); nil means plaintext.
	TLS *tls.Config
	// Timeout bounds one View or Update, retries included (0 means
	// DefaultTimeout), and the reads that start a watch.
	Timeout time.Duration
	// DialTimeout bounds the connection to etcd (0: DefaultDialTimeout).
	DialTimeout time.Duration
	// MaxAttempts bounds the runs of an Update's function when it
	// conflicts with other writers (0: DefaultMaxAttempts).
	MaxAttempts int
	// ElectionTTL is the lease of an election's session, in seconds (0:
	// DefaultElectionTTL); see Campaign.
	ElectionTTL int
	Logger      *slog.Logger
}

// Store is a store.Store over etcd.
type Store struct {
	client      *clientv3.Client
	prefix      string
	timeout     time.Duration
	maxAttempts int
	electionTTL int
	log         *slog.Logger
	clientLog   *clientLog
	clusterID   uint64 // the etcd cluster's, from the answer to Open's read

	writer sync.Mutex // serializes this client's Updates
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
}

var _ store.WatchStore = (*Store)(nil)

// Open connects to etcd and checks that it answers a read within
// Options.Timeout.
func Open(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("opening the etcd store: no endpoints")
	}
	s := &Store{
		prefix: opts.Prefix, timeout: opts.Timeout, maxAttempts: opts.MaxAttempts, electionTTL: opts.ElectionTTL, log: opts.Logger,
	}
	if s.electionTTL <= 0 {
		s.electionTTL = DefaultElectionTTL
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.maxAttempts <= 0 {
		s.maxAttempts = DefaultMaxAttempts
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.clientLog = newClientLog(s.log)
	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		TLS:         opts.TLS,
		DialTimeout: dialTimeout,
		// A client that reaches etcd keeps it: detect a dead connection
		// within seconds, not after the kernel's TCP timeout.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               s.clientLog.zap(),
		// Reconnect to a member that is back within seconds (gRPC's
		// default backoff grows to two minutes).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("opening the etcd store at %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	s.client = client
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ctx, cancel := s.opContext()
	defer cancel()
	resp, err := client.Get(ctx, s.prefix+"\x00open")
	if err != nil {
		err = s.failure("opening the etcd store", err)
		_ = s.Close()
		return nil, err
	}
	s.clusterID = resp.Header.GetClusterId()
	return s, nil
}

// ID names the store: the etcd cluster's ID and the prefix. Every client
// of the same keys has the same ID, whichever members it was given.
func (s *Store) ID() string {
	return fmt.Sprintf("etcd cluster %016x, prefix %s", s.clusterID, s.prefix)
}

// Prefix returns the prefix of every key in etcd.
func (s *Store) Prefix() string { return s.prefix }

// Endpoints returns the etcd endpoints the store uses.
func (s *Store) Endpoints() []string { return s.client.Endpoints() }

// opContext is the context of one View, Update or the start of a watch:
// bounded by the timeout, ended by Close, and refused by a member that
// knows no leader (instead of waiting for one).
func (s *Store) opContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	return clientv3.WithRequireLeader(ctx), cancel
}

// View implements store.Store: every read sees the etcd revision of the
// first one.
func (s *Store) View(fn func(store.Tx) error) error {
	if s.closed.Load() {
		return store.ErrStoreClosed
	}
	ctx, cancel := s.opContext()
	defer cancel()
	tx := newTx(s, ctx, false)
	err := tx.run(fn)
	if tx.err != nil {
		return s.failure("reading from etcd", tx.err)
	}
	return err
}

// Update implements store.Store. fn runs again, in a fresh transaction,
// when the commit finds that another writer changed what it read, and
// while etcd knows no leader (within Options.Timeout). If a read fails,
// Update returns the store's error whatever fn made of it.
func (s *Store) Update(fn func(store.Tx) error) error {
	if s.closed.Load() {
		return store.ErrStoreClosed
	}
	s.writer.Lock()
	defer s.writer.Unlock()
	ctx, cancel := s.opContext()
	defer cancel()
	for attempt := 1; ; attempt++ {
		tx := newTx(s, ctx, true)
		err := tx.run(fn)
		if tx.err != nil {
			return s.failure("reading from etcd", tx.err)
		}
		if err != nil {
			return err
		}
		committed, err := tx.commit()
		switch {
		case err == nil && committed:
			return nil
		case err == nil:
			if attempt >= s.maxAttempts {
				return fmt.Errorf("%w: %d runs of the transaction, each found a key it read changed", ErrConflict, attempt)
			}
			s.log.Debug("etcd transaction conflicted; running it again", "attempt", attempt)
		case errors.Is(err, rpctypes.ErrNoLeader):
			// Refused before it was proposed: nothing was written.
			s.log.Debug("etcd has no leader; retrying the transaction", "attempt", attempt)
		default:
			return s.failure(commitOutcome(err), err)
		}
		select {
		case <-time.After(retryWait(attempt)):
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return s.failure("committing to etcd (not committed)", err)
		}
	}
}

// retryWait is the jittered wait before the next run of a transaction.
func retryWait(attempt int) time.Duration {
	d := time.Millisecond << min(attempt, 5) // 2 ms .. 32 ms
	return d/2 + rand.N(d)
}

// commitOutcome says what a failed commit did: errors etcd answers before
// applying anything are definite, a lost answer leaves it unknown.
func commitOutcome(err error) string {
	switch errorCode(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied, codes.Unauthenticated,
		codes.ResourceExhausted, codes.OutOfRange:
		return "committing to etcd (not committed)"
	}
	return "committing to etcd (the outcome is unknown: the transaction may have been applied)"
}

// errorCode is the gRPC code of an error from the etcd client.
func errorCode(err error) codes.Code {
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		return etcdErr.Code()
	}
	return status.Code(err)
}

// Close implements store.Store. Watches end with store.ErrStoreClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("closing the etcd client: %w", err)
	}
	return nil
}

// failure wraps err from op with what it means: the store was closed,
// etcd has no quorum (with the members reachable), or too big a
// transaction for etcd's limits.
func (s *Store) failure(op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, store.ErrStoreClosed)
	}
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%s: %w: the transaction exceeds etcd's limits (its --max-txn-ops, 128 by default, bounds the comparisons and the writes of one transaction; --max-request-bytes, 1.5 MiB by default, its size): %w", op, store.ErrTooLarge, err)
	case errorCode(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "larger than max"):
		// The client refused to send it (etcd's client sends at most 2 MiB).
		return fmt.Errorf("%s: %w: the transaction exceeds what the etcd client sends: %w", op, store.ErrTooLarge, err)
	case unavailable(err):
		if q := s.diagnose(); q != nil {
			q.op, q.err, q.last = op, err, s.lastClientError(err)
			return q
		}
	}
	if last := s.lastClientError(err); last != "" {
		return fmt.Errorf("%s at %s: %w (the etcd client's last error: %s)", op, strings.Join(s.client.Endpoints(), ","), err, last)
	}
	return fmt.Errorf("%s at %s: %w", op, strings.Join(s.client.Endpoints(), ","), err)
}

// lastClientError is the last error the etcd client retried, when err is
// only that time ran out.
func (s *Store) lastClientError(err error) string {
	if !timedOut(err) {
		return ""
	}
	if last := s.clientLog.last(); !strings.HasSuffix(last, context.DeadlineExceeded.Error()) {
		return last
	}
	return ""
}

// unavailable reports whether err may come from etcd having no quorum.
func unavailable(err error) bool {
	if timedOut(err) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) || errors.Is(err, rpctypes.ErrLeaderChanged) {
		return true
	}
	switch errorCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// timedOut reports whether err says that the operation's time ran out,
// here or, as an error of unknown code, in the member that served it.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), context.DeadlineExceeded.Error())
}
