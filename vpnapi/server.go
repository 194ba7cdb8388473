package vpnapi

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A watch whose answer was late by more than PaceAbove (from the commit
// of the first change it carries to its sending) waits as long, at most
// MaxPace, before it takes the next one: while the coordinator is busy
// answering every watch (thousands of nodes joining), the changes landing
// meanwhile coalesce into fewer, larger answers instead of starving the
// activations and registrations behind them. A coordinator that keeps up
// answers in milliseconds and never waits: there is no fixed delay, and
// a change that finds a watch idle is answered at once. (fabric-scale
// at 10,000 nodes: 30 answers per node by the time 2,450 had joined,
// instead of 84.)
const (
	PaceAbove = time.Second
	MaxPace   = 2 * time.Second
)

// The answers sent and not yet acknowledged hold at most MaxSending bytes
// in all (an answer larger takes the whole budget alone). A node answers
// every message with a report of the revision it applied, which
// acknowledges the answers up to it; a watch whose answer does not fit
// waits, inside the admission (see Server.answer), for acknowledgements.
// So a coordinator answering faster than its nodes read and apply, as
// thousands of nodes joining at once on a machine that also runs their
// simulator, holds that much of their answers in its buffers and theirs,
// and computes the next ones as room comes, instead of queueing every
// node's snapshot at once (at 10,000 nodes a full snapshot is about
// 1 MiB: fabric-scale's simulator had grown to 20 GB and been killed).
// A node that acknowledges nothing holds its share for MaxSendTime at
// most. Answers smaller than MinBudgeted, keepalives and the deltas of
// single changes, take nothing from the budget: keeping count of them
// cost an idle coordinator a third more CPU (fabric-scale, 10,000 nodes:
// 2.7 to 3.7 % of a core), and all of them at 10,000 nodes hold 40 MiB at
// most.
const (
	MaxSending  = 64 << 20
	MaxSendTime = time.Minute
	MinBudgeted = 4 << 10
)

// DefaultKeepalive is how often the coordinator sends a keepalive on a
// watch where nothing else was sent, and a node answers each with a
// report: a watch whose other end hangs, its kernel still answering the
// TCP probes (see WatchProbeIdle), is given up after two keepalives, and
// the revisions that did not concern a node reach it. That a peer is gone
// is the kernels' to notice, not the keepalive's: an idle watch costs the
// coordinator two messages per keepalive. (With a 9 s keepalive, node
// heartbeats every 15 s and HTTP/2 PINGs after 10 s of silence, it was
// 8 frames per 45 s; fabric-scale with 5,000 idle nodes: coordinator CPU
// 7.2 % of a core then, 6.1 % with this keepalive, 1.8 % with its slots
// below; 10,000: 8.7 % then, 2.7 % now.)
const DefaultKeepalive = 30 * time.Second

// Silence is how long either end of a watch with a keepalive every
// keepalive waits for the other's next message before it gives the other
// up: two keepalives and 5 s, for an end slow to read. The node waits for
// the coordinator's messages, the coordinator (coordinator/liveness) for
// the report that answers each of its own.
func Silence(keepalive time.Duration) time.Duration {
	return 2*keepalive + 5*time.Second
}

// KeepaliveTick is the grid the keepalives go out on (a tenth of the
// keepalive if that is shorter). Each node has its slot, one tick of the
// keepalive period on the wall clock, fixed by its VPN IP (the same on
// every coordinator); its keepalive goes at its first slot half a
// keepalive or more after the last message. So an idle watch has one
// keepalive every Keepalive; the keepalives of the nodes sharing a slot
// go out together and their reports come back together, and the
// coordinator wakes once a tick rather than once a watch; and nodes that
// all got the same answer (a join) spread their next keepalives over the
// period instead of sending them, and their kernels' probes, in one burst
// for ever after. The Silence of liveness and the node's (twice the
// keepalive and 5 s) have the half keepalive to spare.
const KeepaliveTick = time.Second

// keepaliveSlot is the offset of ip's slot in the keepalive period.
func keepaliveSlot(ip netip.Addr, keepalive time.Duration) time.Duration {
	tick := min(KeepaliveTick, keepalive/10)
	if tick <= 0 {
		return 0
	}
	b := ip.As16()
	slots := uint64(keepalive / tick)
	return time.Duration(uint64(binary.BigEndian.Uint32(b[12:]))%slots) * tick
}

// keepaliveDue is when the keepalive of a watch whose last message went
// at lastSent is due: at its slot, the first half a keepalive or more
// after lastSent.
func keepaliveDue(lastSent time.Time, keepalive, slot time.Duration) time.Time {
	earliest := lastSent.Add(keepalive / 2)
	k := int64(keepalive)
	// UnixNano is the wall clock's; the result keeps lastSent's
	// monotonic reading.
	off := ((int64(slot)-earliest.UnixNano())%k + k) % k
	return earliest.Add(time.Duration(off))
}

// Feed answers a node with what it must apply after a revision.
type Feed interface {
	// Wait returns when the node answered up to after has something to
	// be answered, or wait elapsed, or with ctx's error.
	Wait(ctx context.Context, ip netip.Addr, after uint64, wait time.Duration) error
	// Answer is what the node must apply to go from after to the
	// current revision. Its peer list may be shared with other answers
	// (the server encodes a list once, see peerLists): it is never
	// modified once returned.
	Answer(ip netip.Addr, after uint64) (update.Update, error)
	// Lateness is how long ago the first change after after that
	// concerns the node committed.
	Lateness(ip netip.Addr, after uint64) time.Duration
}

// Liveness learns from the watches which nodes are alive and what they
// applied.
type Liveness interface {
	// Watching marks the node at ip as watching until the returned
	// function is called.
	Watching(ip netip.Addr) (stop func())
	// Report records a message of the node: the revision it applied and
	// the age of its last WireGuard handshake with the coordinator (-1:
	// none).
	Report(ip netip.Addr, applied uint64, handshakeAge time.Duration)
	// Sent records that the node is sent a message, which it answers
	// with a report, carrying everything up to revision; content says
	// whether it has anything for it to apply.
	Sent(ip netip.Addr, revision uint64, content bool)
	// Passed records that the node misses nothing up to revision,
	// though it was sent nothing (nothing concerned it).
	Passed(ip netip.Addr, revision uint64)
}

// Registry is what the server needs of the coordinator's registry.
type Registry interface {
	Peer(ip netip.Addr) (records.Peer, bool)
	LookupSigningKey(signingPubKey []byte) (records.Peer, bool)
	SetWGEndpoint(ip netip.Addr, wgEndpoint string) error
}

// Registrar runs the registration handshake of a node's reeve.
type Registrar interface {
	Register(ctx context.Context, nodeIP netip.Addr, reevePubKey []byte) error
}

// Config is what NewServer needs.
type Config struct {
	Registry  Registry
	Registrar Registrar
	Feed      Feed
	Liveness  Liveness
	// Keepalive between two messages of a watch (default DefaultKeepalive).
	Keepalive time.Duration
	// SendBudget bounds the bytes of the answers sent and not yet
	// acknowledged (default MaxSending), SendTimeout how long one holds
	// its bytes unacknowledged (default MaxSendTime).
	SendBudget  int64
	SendTimeout time.Duration
}

// Server implements the vpnapi. It keeps no state of its own: the feed
// computes each answer from the change log.
type Server struct {
	vpnapipb.UnimplementedVPNAPIServer
	cfg Config
	// answering admits the watches computing an answer (see answer).
	answering chan struct{}
	// sending holds the bytes of the answers sent and not yet
	// acknowledged (Config.SendBudget).
	sending *semaphore.Weighted
	// peers memoizes the encoding of the peer lists the feed shares.
	peers peerLists
}

// NewServer returns a vpnapi server.
func NewServer(cfg Config) *Server {
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.SendBudget <= 0 {
		cfg.SendBudget = MaxSending
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = MaxSendTime
	}
	return &Server{cfg: cfg, answering: make(chan struct{}, runtime.GOMAXPROCS(0)), sending: semaphore.NewWeighted(cfg.SendBudget)}
}

// LookupSigningKey is the authconn server hook: it accepts the keys of
// active nodes, of the coordinators and of the admins (who watch, to keep
// their own WireGuard peers, but have no reeve to register), which it
// names by VPN IP, and those of removed nodes, whose watch is told they
// were removed and nothing else.
func LookupSigningKey(reg Registry) func(ed25519.PublicKey) (string, error) {
	return func(pubKey ed25519.PublicKey) (string, error) {
		p, ok := reg.LookupSigningKey(pubKey)
		if !ok || (p.Role != records.RoleNode && p.Role != records.RoleCoordinator && p.Role != records.RoleAdmin) {
			return "", errors.New("not an active peer of this cluster")
		}
		return p.VPNIP.String(), nil
	}
}

// caller returns the record of the calling node.
func (s *Server) caller(ctx context.Context) (records.Peer, error) {
	info, err := authconn.RequireMethod(ctx, authconn.MethodSignature)
	if err != nil {
		return records.Peer{}, err
	}
	ip, err := netip.ParseAddr(info.Identity)
	if err != nil {
		return records.Peer{}, status.Errorf(codes.PermissionDenied, "connection identity %q is not a node", info.Identity)
	}
	p, ok := s.cfg.Registry.Peer(ip)
	if !ok {
		return records.Peer{}, status.Errorf(codes.PermissionDenied, "%s is not a node of this cluster", ip)
	}
	return p, nil
}

// WatchUpdates implements vpnapi.
func (s *Server) WatchUpdates(stream grpc.BidiStreamingServer[vpnapipb.WatchRequest, vpnapipb.WatchUpdate]) error {
	ctx := stream.Context()
	node, err := s.caller(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	removed := node.State == records.StateRemoved
	var sentAnswers inFlight
	defer sentAnswers.releaseAll()
	if !removed {
		defer s.cfg.Liveness.Watching(node.VPNIP)()
		// A new WireGuard endpoint is recorded before the first answer,
		// which carries it; the liveness of the first report beside
		// the answers, which do not wait for it to be written.
		s.recordEndpoint(node, first)
		go func() {
			s.reportLiveness(node, first)
			s.reports(node, stream, &sentAnswers)
		}()
	}
	sent := first.GetAppliedRevision()
	keepalive := uint32(s.cfg.Keepalive / time.Second)
	slot := keepaliveSlot(node.VPNIP, s.cfg.Keepalive)
	lastSent := time.Now()
	due := keepaliveDue(lastSent, s.cfg.Keepalive, slot)
	var pace time.Duration
	for {
		if pace > 0 {
			// Coalescing: what lands while the coordinator is busy
			// answering goes into one later answer.
			t := time.NewTimer(pace)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
			pace = 0
		}
		ready := time.Now()
		// The feed answers at the keepalive's due time at the latest.
		if err := s.cfg.Feed.Wait(ctx, node.VPNIP, sent, max(due.Sub(ready), time.Millisecond)); err != nil {
			return status.FromContextError(err).Err()
		}
		u, msg, release, err := s.answer(ctx, node, sent)
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Error(codes.Internal, err.Error())
		}
		if u.Kind == update.Unchanged && u.Revision != sent && time.Now().Before(due) {
			// Nothing for this node: it need not be woken; the next
			// keepalive carries the revision.
			if release != nil {
				release()
			}
			sent = u.Revision
			s.cfg.Liveness.Passed(node.VPNIP, sent)
			continue
		}
		msg.KeepaliveS = keepalive
		if !removed && u.Kind != update.Removed {
			// Before sending: the node's answer may come before Send
			// returns.
			s.cfg.Liveness.Sent(node.VPNIP, u.Revision, u.Kind != update.Unchanged)
		}
		if release != nil {
			// Before sending too: the report that acknowledges it may
			// come before Send returns.
			sentAnswers.add(u.Revision, release, s.cfg.SendTimeout)
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		lastSent = time.Now()
		due = keepaliveDue(lastSent, s.cfg.Keepalive, slot)
		// Lateness counts from the first change the answer carries, but
		// the time the watch spent pacing is not the coordinator's:
		// counted, a change landing while the watch paces made it pace
		// again, change after change. So a watch ready for less than
		// PaceAbove is on time, and the feed's log is not looked at
		// again for it.
		if busy := lastSent.Sub(ready); u.Kind != update.Unchanged && busy > PaceAbove {
			if late := min(s.cfg.Feed.Lateness(node.VPNIP, sent), busy); late > PaceAbove {
				pace = min(late, MaxPace)
			}
		}
		if u.Kind == update.Removed {
			return nil
		}
		sent = u.Revision
	}
}

// answer computes and encodes the node's answer from after, admitted
// among at most GOMAXPROCS watches doing so at once: with thousands of
// watches woken together (a mass join), the rest wait parked instead of
// crowding the scheduler, so that activations and registrations still get
// their share of the CPU (fabric-scale at 10,000 nodes: 5,200 activated
// after 2 minutes instead of 2,800). The answer then takes its bytes from
// the sending budget (Config.SendBudget) before it leaves the admission, so that
// no more answers are computed than the nodes read; release gives them
// back once the node acknowledged the answer (see inFlight). An answer
// smaller than MinBudgeted takes nothing, and release is nil. Sending is
// left outside, so that a node slow to read holds no one up while the
// budget lasts.
func (s *Server) answer(ctx context.Context, node records.Peer, after uint64) (_ update.Update, _ *vpnapipb.WatchUpdate, release func(), _ error) {
	select {
	case s.answering <- struct{}{}:
	case <-ctx.Done():
		return update.Update{}, nil, nil, ctx.Err()
	}
	defer func() { <-s.answering }()
	u, err := s.cfg.Feed.Answer(node.VPNIP, after)
	if err != nil {
		return u, nil, nil, err
	}
	msg, err := s.peers.updateToProto(u, node.Name)
	if err != nil {
		return u, nil, nil, err
	}
	n := min(int64(proto.Size(msg)), s.cfg.SendBudget)
	if n < MinBudgeted {
		return u, msg, nil, nil
	}
	if err := s.sending.Acquire(ctx, n); err != nil {
		return u, nil, nil, err
	}
	return u, msg, sync.OnceFunc(func() { s.sending.Release(n) }), nil
}

// inFlight is the answers of one watch sent and not yet acknowledged, in
// the order sent: the node's report of a revision at least an answer's
// releases its bytes of the sending budget, and so do the end of the
// watch and the answer's timeout.
type inFlight struct {
	mu      sync.Mutex
	answers []sentAnswer
}

type sentAnswer struct {
	revision uint64
	release  func()
}

// add records an answer of the revision sent (or being sent), whose bytes
// release gives back, after timeout at the latest.
func (f *inFlight) add(revision uint64, release func(), timeout time.Duration) {
	t := time.AfterFunc(timeout, release)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers = append(f.answers, sentAnswer{revision: revision, release: func() { t.Stop(); release() }})
}

// ack releases the answers of revisions up to revision.
func (f *inFlight) ack(revision uint64) {
	f.mu.Lock()
	i := 0
	for i < len(f.answers) && f.answers[i].revision <= revision {
		i++
	}
	acked := slices.Clone(f.answers[:i])
	f.answers = slices.Delete(f.answers, 0, i)
	f.mu.Unlock()
	for _, a := range acked {
		a.release()
	}
}

// releaseAll releases every answer: the watch ended.
func (f *inFlight) releaseAll() { f.ack(math.MaxUint64) }

// reports receives the node's reports until its watch ends.
// Each acknowledges the answers sent up to its revision.
func (s *Server) reports(node records.Peer, stream grpc.BidiStreamingServer[vpnapipb.WatchRequest, vpnapipb.WatchUpdate], sent *inFlight) {
	for {
		req, err := stream.Recv()
		if err != nil {
			return
		}
		sent.ack(req.GetAppliedRevision())
		s.report(node, req)
	}
}

func (s *Server) report(node records.Peer, req *vpnapipb.WatchRequest) {
	s.reportLiveness(node, req)
	s.recordEndpoint(node, req)
}

func (s *Server) reportLiveness(node records.Peer, req *vpnapipb.WatchRequest) {
	age := time.Duration(req.GetCoordinatorHandshakeAgeMs()) * time.Millisecond
	if req.GetCoordinatorHandshakeAgeMs() < 0 {
		age = -1
	}
	s.cfg.Liveness.Report(node.VPNIP, req.GetAppliedRevision(), age)
}

// recordEndpoint records the WireGuard endpoint req reports, if it
// changed.
func (s *Server) recordEndpoint(node records.Peer, req *vpnapipb.WatchRequest) {
	// Errors (a malformed endpoint) leave the record as it was; the node
	// reports again on its next watch.
	switch ep := req.GetWgEndpoint(); {
	case req.GetRoaming() && node.Role == records.RoleAdmin:
		_ = s.cfg.Registry.SetWGEndpoint(node.VPNIP, "")
	case ep != "" && ep != node.WGEndpoint:
		_ = s.cfg.Registry.SetWGEndpoint(node.VPNIP, ep)
	}
}

// Register implements vpnapi: the calling node's reeve offers its key.
func (s *Server) Register(ctx context.Context, req *vpnapipb.RegisterRequest) (*vpnapipb.RegisterResponse, error) {
	node, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if node.State != records.StateActive {
		return nil, status.Errorf(codes.PermissionDenied, "%s (%s) is %s", node.Name, node.VPNIP, node.State)
	}
	if node.Role == records.RoleAdmin {
		return nil, status.Errorf(codes.PermissionDenied, "%s (%s) is an admin, which has no reeve to register", node.Name, node.VPNIP)
	}
	if s.cfg.Registrar == nil {
		return nil, status.Error(codes.Unavailable, "registration is not served here")
	}
	// A malformed offer is refused before the handshake, which records its
	// outcome: it must not unregister the node's registered reeve.
	if n := len(req.GetReevePubKey()); n != ed25519.PublicKeySize {
		return nil, status.Errorf(codes.InvalidArgument, "offered reeve key has %d bytes, want %d", n, ed25519.PublicKeySize)
	}
	if err := s.cfg.Registrar.Register(ctx, node.VPNIP, req.GetReevePubKey()); err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return &vpnapipb.RegisterResponse{}, nil
}

// ServerOptions tune the vpnapi's gRPC server for many long-lived, mostly
// idle watches: small per-connection read buffers and write buffers shared
// between connections (a watch sends a few hundred bytes now and then),
// pings of clients allowed every ServerMinPing, and fixed flow-control
// windows (see ServerWindow). Its listener comes from Listener; gRPC sets
// each connection's TCP_USER_TIMEOUT to its keepalive's Timeout (20 s by
// default) over the listener's, so that is ServerDeadAfter too.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Timeout: ServerDeadAfter}),
		grpc.ReadBufferSize(4 << 10),
		grpc.WriteBufferSize(16 << 10),
		grpc.SharedWriteBuffer(true),
		grpc.StaticStreamWindowSize(ServerWindow), grpc.StaticConnWindowSize(ServerWindow),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: ServerMinPing, PermitWithoutStream: true}),
	}
}
