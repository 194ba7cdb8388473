package scale

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/dialopts"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// phase is where a simulated node is in its life.
type phase int32

const (
	phaseWaiting   phase = iota // accepting-init: waiting for its activation
	phaseActivated              // activated: watching, registering
	phaseJoined                 // its pastiche is recorded by the steward
	phaseRemoved                // removed from the cluster
)

// node is one simulated node: its own keys, its own authenticated
// connection to the coordinator's vpnapi with the WatchUpdates stream, and
// the state it applied (a fake network manager: digests instead of a
// WireGuard device and a reeve).
type node struct {
	sim    *simulator
	index  int
	name   string
	horde  string
	number int        // the name's number (see names)
	pubIP  netip.Addr // where its pubapi is served

	signing ed25519.PrivateKey
	wgKey   wgtypes.Key
	reeve   ed25519.PrivateKey
	client  ed25519.PrivateKey // its pastiche client's key

	phase    atomic.Int32
	vpnOff   atomic.Int64 // its VPN IP's offset in the CIDR, -1 before activation
	received atomic.Int64 // bytes read on its watch connection
	messages atomic.Int64 // answers received on its watch

	mu         sync.Mutex
	vpnIP      netip.Addr
	clusterID  string
	cidr       netip.Prefix
	co         core.CoordinatorInfo
	wgEndpoint string
	state      nodeState
	h          hasher
	lastBytes  int64 // received at the previous message
	probe      probeResult
	lastErr    string
	servicesAt uint64 // the revision of its services record
	cancel     context.CancelFunc
	sendMu     sync.Mutex
	stream     grpc.BidiStreamingClient[vpnapipb.WatchRequest, vpnapipb.WatchUpdate]
}

// probeResult is when a node first applied a change of the probed node,
// and the bytes of the message that carried it.
type probeResult struct {
	epoch      uint64
	peerAt     int64 // unix ns; 0: not yet
	peerBytes  int64
	sliceAt    int64
	sliceBytes int64
}

func (n *node) getPhase() phase { return phase(n.phase.Load()) }

// activate records the node's activation and starts its watch. A repeated
// activation from the same cluster (its answer was lost) changes nothing.
func (n *node) activate(ctx context.Context, act core.NodeActivation) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.getPhase() != phaseWaiting {
		if act.ClusterID == n.clusterID && act.NodeVPNIP == n.vpnIP {
			return nil
		}
		return fmt.Errorf("%w: node %s is already node %s of cluster %s", core.ErrWrongState, n.name, n.vpnIP, n.clusterID)
	}
	if err := n.sim.addVPNAddress(act.NodeVPNIP); err != nil {
		return err
	}
	n.vpnIP, n.clusterID, n.cidr, n.co = act.NodeVPNIP, act.ClusterID, act.VPNCIDR, act.Coordinator
	n.wgEndpoint = n.defaultWGEndpoint()
	n.vpnOff.Store(int64(offset(act.VPNCIDR, act.NodeVPNIP)))
	runCtx, cancel := context.WithCancel(ctx)
	n.cancel = cancel
	n.phase.Store(int32(phaseActivated))
	go n.run(runCtx)
	go n.join(runCtx)
	return nil
}

// defaultWGEndpoint is where the node says its WireGuard listens: with
// --wg-endpoints its public address and a port where nothing listens,
// else none (the simulator runs no WireGuard; see Simulate).
func (n *node) defaultWGEndpoint() string {
	if !n.sim.wgEndpoints {
		return ""
	}
	return netip.AddrPortFrom(n.pubIP, wgPort).String()
}

// leave takes the node out of the cluster (removed, or told to leave).
func (n *node) leave() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.phase.Store(int32(phaseRemoved))
	if n.cancel != nil {
		n.cancel()
	}
}

func (n *node) setErr(err error) {
	n.mu.Lock()
	n.lastErr = err.Error()
	n.mu.Unlock()
}

// dialVPN connects from the node's VPN IP, as a node's connections come
// out of its WireGuard interface.
func (n *node) dialVPN(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: n.vpnIP.AsSlice()}}
	return d.DialContext(ctx, "tcp", addr)
}

// countingConn counts the bytes read into the node's counter.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	k, err := c.Conn.Read(b)
	c.n.Add(int64(k))
	return k, err
}

// dialVPNAPI opens an authenticated connection to the coordinator's
// vpnapi (authconn with the node's key, pinning the coordinator's
// certificate), with vpnapi.Dialer's options (the kernel's probes and
// fixed windows, so that the coordinator sees what real nodes send) and
// small buffers: the simulator holds thousands of them.
func (n *node) dialVPNAPI(counted bool) (*grpc.ClientConn, error) {
	creds, err := authconn.NewClientCredentials(authconn.ClientConfig{SigningPrivKey: n.signing, ServerCertPin: n.co.TLSPin})
	if err != nil {
		return nil, err
	}
	dial := vpnapi.WatchDial(n.dialVPN)
	if counted {
		watched := dial
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := watched(ctx, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: c, n: &n.received}, nil
		}
	}
	opts := append(append(creds.DialOptions(), dialopts.Reconnect()), vpnapi.WatchDialOptions()...)
	opts = append(opts, grpc.WithContextDialer(dial),
		grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10), grpc.WithSharedWriteBuffer(true))
	return grpc.NewClient("passthrough:///"+n.co.VPNAPIEndpoint, opts...)
}

// run keeps the node's watch open until it is removed or ctx ends.
func (n *node) run(ctx context.Context) {
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	for ctx.Err() == nil {
		err := n.watch(ctx)
		if errors.Is(err, errRemoved) || ctx.Err() != nil {
			return
		}
		n.setErr(fmt.Errorf("watch: %w", err))
		if !b.sleep(ctx) {
			return
		}
	}
}

var errRemoved = errors.New("removed")

// watch opens one watch and applies its answers until it breaks.
func (n *node) watch(ctx context.Context) error {
	conn, err := n.dialVPNAPI(true)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := vpnapipb.NewVPNAPIClient(conn).WatchUpdates(ctx, grpc.MaxCallRecvMsgSize(vpnapi.MaxUpdateSize))
	if err != nil {
		return err
	}
	n.mu.Lock()
	first := &vpnapipb.WatchRequest{AppliedRevision: n.state.rev, WgEndpoint: n.wgEndpoint, CoordinatorHandshakeAgeMs: -1}
	n.mu.Unlock()
	if err := n.send(stream, first); err != nil {
		return err
	}
	n.mu.Lock()
	n.stream = stream
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.stream = nil
		n.mu.Unlock()
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		at := time.Now().UnixNano()
		n.messages.Add(1)
		u, err := vpnapi.UpdateFromProto(msg)
		if err != nil {
			return fmt.Errorf("decoding an update: %w", err)
		}
		if u.Kind == update.Removed {
			n.leave()
			return errRemoved
		}
		// Every message is answered, a keepalive too, as a real node
		// does.
		rev := n.applyUpdate(u, at)
		if err := n.send(stream, &vpnapipb.WatchRequest{AppliedRevision: rev, CoordinatorHandshakeAgeMs: -1}); err != nil {
			return err
		}
	}
}

func (n *node) send(stream grpc.BidiStreamingClient[vpnapipb.WatchRequest, vpnapipb.WatchUpdate], req *vpnapipb.WatchRequest) error {
	n.sendMu.Lock()
	defer n.sendMu.Unlock()
	return stream.Send(req)
}

// applyUpdate applies u to the node's state, noting when a change of the
// probed node arrived, and returns the revision it now holds.
func (n *node) applyUpdate(u update.Update, at int64) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	bytes := n.received.Load()
	delta := bytes - n.lastBytes
	n.lastBytes = bytes
	p := n.sim.probe.Load()
	if p == nil || p.target == n {
		n.state.apply(&n.h, n.sim.names, n.cidr, n.name, u)
		return n.state.rev
	}
	off := int(p.target.vpnOff.Load())
	peerBefore, sliceBefore := get(n.state.peers, off), get(n.state.slices, p.target.number)
	n.state.apply(&n.h, n.sim.names, n.cidr, n.name, u)
	if n.probe.epoch != p.epoch {
		n.probe = probeResult{epoch: p.epoch}
	}
	if n.probe.peerAt == 0 && get(n.state.peers, off) != peerBefore {
		n.probe.peerAt, n.probe.peerBytes = at, delta
	}
	if n.probe.sliceAt == 0 && get(n.state.slices, p.target.number) != sliceBefore {
		n.probe.sliceAt, n.probe.sliceBytes = at, delta
	}
	return n.state.rev
}

// report sends the node's new WireGuard endpoint on its watch; false if
// it has none open.
func (n *node) report(wgEndpoint string) bool {
	n.mu.Lock()
	stream, rev := n.stream, n.state.rev
	if wgEndpoint != "" {
		n.wgEndpoint = wgEndpoint
	}
	n.mu.Unlock()
	if stream == nil {
		return false
	}
	return n.send(stream, &vpnapipb.WatchRequest{AppliedRevision: rev, WgEndpoint: wgEndpoint, CoordinatorHandshakeAgeMs: -1}) == nil
}

// join runs what a node's reeve does after its activation: the
// registration handshake (Register on the vpnapi, then the registry's
// callback to the reeve endpoint), then the pastiche endpoint and client
// sent to the steward.
func (n *node) join(ctx context.Context) {
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for {
		err := n.register(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.setErr(fmt.Errorf("registering: %w", err))
		if !b.sleep(ctx) {
			return
		}
	}
	b.reset()
	for {
		rev, err := n.updateServices(ctx)
		if err == nil {
			n.mu.Lock()
			n.servicesAt = rev
			n.mu.Unlock()
			n.phase.CompareAndSwap(int32(phaseActivated), int32(phaseJoined))
			return
		}
		if ctx.Err() != nil {
			return
		}
		n.setErr(fmt.Errorf("updating the steward: %w", err))
		if !b.sleep(ctx) {
			return
		}
	}
}

// register serves the reeve endpoint on the node's VPN IP for the
// registry's callback while it offers its reeve key on the vpnapi. (A
// real reeve keeps its endpoint open; the simulator closes it after the
// handshake, which is all it serves here.)
func (n *node) register(ctx context.Context) error {
	addr := netip.AddrPortFrom(n.vpnIP, serviceid.ReevePort)
	lis, err := net.Listen("tcp", addr.String())
	if err != nil {
		return err
	}
	registryID := serviceid.ID(serviceid.Registry, n.co.Name)
	srv := grpc.NewServer(signedrpc.ServerOptions(signedrpc.ServerConfig{
		Host:      addr.String(),
		Whitelist: oneKey{id: registryID, key: n.co.SigningPubKey},
		Replay:    httpsig.NewReplayCache(16),
	})...)
	reevepb.RegisterReeveServer(srv, challenge{n: n, registryID: registryID})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := n.dialVPNAPI(false)
	if err != nil {
		return err
	}
	defer func() { go conn.Close() }() // closing waits for its goroutines
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = vpnapipb.NewVPNAPIClient(conn).Register(ctx, &vpnapipb.RegisterRequest{ReevePubKey: n.reeve.Public().(ed25519.PublicKey)})
	return err
}

// updateServices sends the node's pastiche endpoint and client to the
// steward, signed with the reeve's key, and returns the revision that
// recorded them.
func (n *node) updateServices(ctx context.Context) (uint64, error) {
	steward := netip.AddrPortFrom(n.co.VPNIP, serviceid.StewardPort).String()
	reeveID := serviceid.ID(serviceid.Reeve, n.name)
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(n.dialVPN),
	}, signedrpc.DialOptions(reeveID, signedrpc.KeySigner{KeyID: reeveID, PrivKey: n.reeve})...)
	conn, err := grpc.NewClient("passthrough:///"+steward, opts...)
	if err != nil {
		return 0, err
	}
	defer func() { go conn.Close() }() // closing waits for its goroutines
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := vpnapipb.NewStewardClient(conn).UpdateServices(ctx, &vpnapipb.UpdateServicesRequest{
		Endpoints: []*vpnapipb.ServiceEndpoint{{Service: serviceid.Pastiche, Port: serviceid.PastichePort}},
		Clients:   []*vpnapipb.ServiceClient{{Service: serviceid.Pastiche, PubKey: n.client.Public().(ed25519.PublicKey)}},
	})
	if err != nil {
		return 0, err
	}
	return resp.GetRevision(), nil
}

// oneKey is a whitelist of one client: the registry, the only caller of a
// reeve's endpoint during registration.
type oneKey struct {
	id  string
	key ed25519.PublicKey
}

func (w oneKey) Lookup(keyID string) (ed25519.PublicKey, error) {
	if keyID != w.id {
		return nil, fmt.Errorf("%w: %s", httpsig.ErrNotWhitelisted, keyID)
	}
	return w.key, nil
}

// challenge answers the registry's callback as a reeve does: it signs the
// nonce with the reeve key the node offered.
type challenge struct {
	reevepb.UnimplementedReeveServer
	n          *node
	registryID string
}

func (c challenge) Challenge(ctx context.Context, req *reevepb.ChallengeRequest) (*reevepb.ChallengeResponse, error) {
	if caller, _ := signedrpc.Caller(ctx); caller != c.registryID {
		return nil, status.Errorf(codes.PermissionDenied, "only the registry may challenge this reeve, not %s", caller)
	}
	if len(req.GetNonce()) < 16 {
		return nil, status.Error(codes.InvalidArgument, "nonce too short")
	}
	msg := serviceid.ChallengeMessage(c.n.clusterID, c.n.name, req.GetNonce())
	return &reevepb.ChallengeResponse{Signature: ed25519.Sign(c.n.reeve, msg)}, nil
}

// backoff spaces retries: min, doubling up to max.
type backoff struct{ min, max, next time.Duration }

func (b *backoff) sleep(ctx context.Context) bool {
	if b.next == 0 {
		b.next = b.min
	}
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.next = 0 }
