package vpnapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/dialopts"
	"github.com/fabricmesh/fabric/internal/tcpkeepalive"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
)

// The kernels at both ends of a watch watch its peer (TCP keepalive and
// TCP_USER_TIMEOUT, see internal/tcpkeepalive): an idle watch costs
// neither process anything between two keepalives, where HTTP/2 PINGs
// cost the coordinator a frame to read and one to write per node every
// few seconds. A coordinator that dies without closing its connections,
// as with SIGKILL, which takes its WireGuard interface with it so that no
// FIN or RST reaches the node, or whose machine is gone, is given up
// within WatchDeadAfter of the last thing the node received (the
// coordinator's kernel answers a probe after WatchProbeIdle of silence)
// or of a report left unacknowledged, and the node watches another
// coordinator. A coordinator that hangs with its kernel up is given up
// after the watch's silence, twice the keepalive plus 5 s (65 s).
//
// The coordinator's end gives a node up within ServerDeadAfter: then the
// node's watch closes and, the liveness grace later, it shows offline. A
// node too busy to read for longer is not taken for dead: its socket holds
// a whole flow-control window (WatchWindow) unread, so its TCP window
// never closes and the coordinator's kernel sees everything it sent
// acknowledged; the coordinator's gRPC waits for the window in the
// meantime. (A closed TCP window is given up after the user timeout: at
// 10,000 nodes on two cores, a simulator slow to read a snapshot lost its
// watches, and with them the snapshot, again and again.)
var (
	watchKeepalive  = tcpkeepalive.Config{Idle: WatchProbeIdle, Interval: time.Second, DeadAfter: WatchDeadAfter, ReceiveBuffer: 2 * WatchWindow}
	serverKeepalive = tcpkeepalive.Config{Idle: ServerDeadAfter - 3*time.Second, Interval: time.Second, DeadAfter: ServerDeadAfter}
)

// The bounds above; ServerMinPing is how often a client may ping the
// server (HTTP/2 PING; nodes before the kernel's probes pinged every
// 10 s).
const (
	WatchProbeIdle  = 10 * time.Second
	WatchDeadAfter  = 13 * time.Second
	ServerDeadAfter = 10 * time.Second
	ServerMinPing   = 5 * time.Second
)

// The flow-control windows of a watch's connection are fixed, which turns
// off gRPC's bandwidth probing: with it, each message received is answered
// by a PING (BDP estimation) and that PING by its ACK, so that every
// keepalive and every report of a mostly idle watch cost the coordinator
// three frames to write and read instead of one. The node's window
// (WatchWindow) lets a coordinator send a full snapshot of a large cluster
// (about 1 MiB at 10,000 nodes) without waiting for a window update; the
// coordinator's (ServerWindow) is gRPC's default, as reports are small.
const (
	WatchWindow  = 1 << 20
	ServerWindow = 64 << 10
)

// WatchDialOptions are the gRPC options of a watch's connection: the
// fixed windows. The connection itself must come from WatchDial.
func WatchDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(WatchWindow), grpc.WithStaticConnWindowSize(WatchWindow)}
}

// WatchDial wraps dial (nil: a plain TCP dial) so that the kernel watches
// the coordinator at the other end of each connection it opens.
func WatchDial(dial func(ctx context.Context, addr string) (net.Conn, error)) func(ctx context.Context, addr string) (net.Conn, error) {
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	return watchKeepalive.Dialer(dial)
}

// Listener wraps the vpnapi's TCP listener so that the kernel watches the
// node at the other end of each connection it accepts.
func Listener(lis net.Listener) (net.Listener, error) { return serverKeepalive.Listener(lis) }

// MaxUpdateSize bounds one update a node accepts: a full snapshot of a
// large cluster (every peer, and a view of every endpoint the node may
// use) is bigger than gRPC's default 4 MiB.
const MaxUpdateSize = 256 << 20

// Dialer connects a node (or an admin on the VPN) to its coordinator's
// vpnapi. It implements core.CoordinatorDialer.
type Dialer struct {
	// SigningPrivKey is the node's ed25519 key, which the coordinator knows.
	SigningPrivKey ed25519.PrivateKey
	// DialContext opens connections inside the VPN (nil: net.Dialer).
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
}

var _ core.CoordinatorDialer = (*Dialer)(nil)

// Watch implements core.CoordinatorDialer: it opens the node's watch.
func (d *Dialer) Watch(ctx context.Context, co core.CoordinatorInfo, start core.WatchStart) (core.Watch, error) {
	conn, err := d.dial(co)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := vpnapipb.NewVPNAPIClient(conn).WatchUpdates(ctx, grpc.MaxCallRecvMsgSize(MaxUpdateSize))
	if err == nil {
		err = stream.Send(&vpnapipb.WatchRequest{AppliedRevision: start.Applied, WgEndpoint: start.WGEndpoint, Roaming: start.Roaming, CoordinatorHandshakeAgeMs: -1})
	}
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("opening the watch on %s: %w", co.VPNAPIEndpoint, err)
	}
	return &watch{conn: conn, stream: stream, cancel: cancel, silence: DefaultKeepalive * 2}, nil
}

// Register runs the registration handshake of this node's reeve with the
// coordinator (see vpnapi.proto).
func (d *Dialer) Register(ctx context.Context, co core.CoordinatorInfo, reevePubKey []byte) error {
	conn, err := d.dial(co)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = vpnapipb.NewVPNAPIClient(conn).Register(ctx, &vpnapipb.RegisterRequest{ReevePubKey: reevePubKey})
	return err
}

func (d *Dialer) dial(co core.CoordinatorInfo) (*grpc.ClientConn, error) {
	creds, err := authconn.NewClientCredentials(authconn.ClientConfig{SigningPrivKey: d.SigningPrivKey, ServerCertPin: co.TLSPin})
	if err != nil {
		return nil, err
	}
	opts := append(append(creds.DialOptions(), dialopts.Reconnect()), WatchDialOptions()...)
	opts = append(opts, grpc.WithContextDialer(WatchDial(d.DialContext)))
	conn, err := grpc.NewClient("passthrough:///"+co.VPNAPIEndpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("dialing vpnapi %s: %w", co.VPNAPIEndpoint, err)
	}
	return conn, nil
}

// watch is a node's open watch.
type watch struct {
	conn   *grpc.ClientConn
	stream grpc.BidiStreamingClient[vpnapipb.WatchRequest, vpnapipb.WatchUpdate]
	cancel context.CancelFunc
	// silence is how long Recv waits for a message (twice the
	// coordinator's keepalive) before it gives the coordinator up.
	silence time.Duration

	sendMu sync.Mutex
}

// Recv implements core.Watch.
func (w *watch) Recv() (update.Update, error) {
	t := time.AfterFunc(w.silence, w.cancel)
	msg, err := w.stream.Recv()
	if !t.Stop() && err != nil {
		return update.Update{}, fmt.Errorf("no message from the coordinator for %v: %w", w.silence, err)
	}
	if err != nil {
		return update.Update{}, err
	}
	if k := msg.GetKeepaliveS(); k > 0 {
		w.silence = Silence(time.Duration(k) * time.Second)
	}
	return UpdateFromProto(msg)
}

// Report implements core.Watch.
func (w *watch) Report(applied uint64, handshakeAge time.Duration) error {
	ms := int64(-1)
	if handshakeAge >= 0 {
		ms = handshakeAge.Milliseconds()
	}
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.stream.Send(&vpnapipb.WatchRequest{AppliedRevision: applied, CoordinatorHandshakeAgeMs: ms})
}

// Close implements core.Watch.
func (w *watch) Close() error {
	w.cancel()
	return w.conn.Close()
}
