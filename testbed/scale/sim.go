package scale

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Where the simulator serves its nodes: node i's pubapi is at
// 127.2.0.0 + i + 1, port nodePubPort (one listener on the wildcard
// address answers for all of them, telling them apart by the address the
// coordinator dialled), and its WireGuard endpoint is the same address at
// wgPort, where nothing listens.
const (
	nodePubPort = 17443
	wgPort      = 51999
)

var firstNodeIP = netip.MustParseAddr("127.2.0.1")

// simulator holds the simulated nodes of one run.
type simulator struct {
	ctx   context.Context
	log   *slog.Logger
	nodes []*node
	byIP  map[netip.Addr]*node
	names *names
	probe atomic.Pointer[probe]
	lo    netlink.Link
	// wgEndpoints: the nodes report a WireGuard endpoint (see Simulate).
	wgEndpoints bool
}

// probe is the node whose changes the other nodes time.
type probe struct {
	epoch  uint64
	target *node
}

// Simulate is `fabric-scale simulate`: the simulator process. It serves
// the node side of the pubapi for --nodes nodes and, on its control
// socket, the driver's requests (control.go).
//
// The simulated nodes run no WireGuard. By default they report no
// WireGuard endpoint, as a roaming peer does, so the coordinator's
// WireGuard waits for them to write first. With --wg-endpoints each
// reports one, a loopback port where nothing listens: the coordinator's
// wireguard-go then sends every node a handshake initiation every 5 s, in
// vain, which a real node would answer once every 2 minutes.
func Simulate(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("fabric-scale simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", "", "unix socket of the control API")
	count := fs.Int("nodes", 0, "number of simulated nodes")
	keyFile := fs.String("bootstrap-key-file", "", "the cluster's bootstrap key")
	wgEndpoints := fs.Bool("wg-endpoints", false, "the nodes report a WireGuard endpoint where nothing answers")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := simulate(ctx, log, *control, *count, *keyFile, *wgEndpoints); err != nil {
		log.Error("simulator failed", "err", err)
		return 1
	}
	return 0
}

func simulate(ctx context.Context, log *slog.Logger, control string, count int, keyFile string, wgEndpoints bool) error {
	if control == "" || count < 1 || count > 60000 {
		return errors.New("--control and --nodes (1-60000) are required")
	}
	if err := raiseFileLimit(count); err != nil {
		return err
	}
	key, err := bootstrapkey.ReadFile(keyFile)
	if err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	s := &simulator{ctx: ctx, log: log, byIP: map[netip.Addr]*node{}, names: newNames(), lo: lo, wgEndpoints: wgEndpoints}
	start := time.Now()
	if err := s.makeNodes(count); err != nil {
		return err
	}
	log.Info("nodes made", "nodes", count, "took", time.Since(start))
	// One certificate for every node's pubapi: the coordinator proves the
	// bootstrap key and checks the node's, and pins no node certificate.
	_, certKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	cert, err := authconn.NewSelfSignedCertificate(certKey, "fabric-scale simulator")
	if err != nil {
		return err
	}
	// Every node's pubapi is dialled from the coordinator's one address:
	// the cap of handshakes from one address is that of all the nodes.
	creds, err := authconn.NewServerCredentials(authconn.ServerConfig{Certificate: cert, BootstrapKey: key,
		MaxPendingHandshakes: count, MaxPendingHandshakesPerIP: count})
	if err != nil {
		return err
	}
	pubLis, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", nodePubPort))
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	pubapipb.RegisterPubAPIServer(srv, pubServer{s: s})
	go func() { _ = srv.Serve(pubLis) }()
	defer srv.Stop()

	_ = os.Remove(control)
	ctlLis, err := net.Listen("unix", control)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s.controlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	log.Info("simulator ready", "nodes", count, "control", control)
	if err := hs.Serve(ctlLis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// raiseFileLimit raises the open file limit to its hard limit, which the
// processes the driver starts inherit (the coordinator's fabricd too), and
// checks that it leaves room for a connection per node and more.
func raiseFileLimit(nodes int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising the open file limit to %d: %w", lim.Cur, err)
	}
	if need := uint64(nodes) + 4096; lim.Cur < need {
		return fmt.Errorf("the open file limit is %d; %d nodes need %d (raise the hard limit: ulimit -Hn)", lim.Cur, nodes, need)
	}
	return nil
}

// makeNodes makes count nodes with their keys, in the hordes sharks and
// jets alternately.
func (s *simulator) makeNodes(count int) error {
	ip := firstNodeIP
	for i := range count {
		n := &node{sim: s, index: i, name: nodeName(i), horde: []string{"sharks", "jets"}[i%2], pubIP: ip}
		var err error
		if _, n.signing, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return err
		}
		if _, n.reeve, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return err
		}
		if _, n.client, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return err
		}
		if n.wgKey, err = wgtypes.GeneratePrivateKey(); err != nil {
			return err
		}
		n.number = s.names.number(n.name)
		n.vpnOff.Store(-1)
		s.nodes = append(s.nodes, n)
		s.byIP[ip] = n
		ip = ip.Next()
	}
	return nil
}

func nodeName(i int) string { return fmt.Sprintf("sim%05d", i) }

// addVPNAddress puts a node's VPN IP on lo, so that the node's
// connections leave from it and the coordinator's calls to it (the
// registration callback) reach the simulator: inside the coordinator's
// namespace a local address wins over the route into the WireGuard
// interface.
func (s *simulator) addVPNAddress(ip netip.Addr) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
	if err := netlink.AddrAdd(s.lo, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("adding %s to lo: %w", ip, err)
	}
	return nil
}

// pubServer is the node side of the pubapi, for every simulated node: it
// tells the node by the address the coordinator dialled.
type pubServer struct {
	pubapipb.UnimplementedPubAPIServer
	s *simulator
}

func (p pubServer) node(ctx context.Context) (*node, error) {
	if _, err := authconn.RequireMethod(ctx, authconn.MethodBootstrap); err != nil {
		return nil, err
	}
	pr, ok := peer.FromContext(ctx)
	if !ok || pr.LocalAddr == nil {
		return nil, status.Error(codes.Internal, "no local address")
	}
	ap, err := netip.ParseAddrPort(pr.LocalAddr.String())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	n := p.s.byIP[ap.Addr().Unmap()]
	if n == nil {
		return nil, status.Errorf(codes.NotFound, "no simulated node at %s", ap.Addr())
	}
	return n, nil
}

func (p pubServer) GetState(ctx context.Context, _ *pubapipb.GetStateRequest) (*pubapipb.GetStateResponse, error) {
	n, err := p.node(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pubapipb.GetStateResponse{
		State: string(core.StateAcceptingInit), Name: n.name, Horde: n.horde,
		PublicEndpoint: netip.AddrPortFrom(n.pubIP, nodePubPort).String(),
		VpnPubKey:      pubKeyBytes(n.wgKey), SigningPubKey: n.signing.Public().(ed25519.PublicKey),
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch n.getPhase() {
	case phaseActivated, phaseJoined:
		resp.State, resp.ClusterId, resp.VpnIp = string(core.StateNode), n.clusterID, n.vpnIP.String()
	}
	return resp, nil
}

func pubKeyBytes(k wgtypes.Key) []byte {
	pub := k.PublicKey()
	return pub[:]
}

func (p pubServer) ActivateAsNode(ctx context.Context, req *pubapipb.ActivateAsNodeRequest) (*pubapipb.ActivateAsNodeResponse, error) {
	n, err := p.node(ctx)
	if err != nil {
		return nil, err
	}
	act, err := activationFromProto(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := n.activate(p.s.ctx, act); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &pubapipb.ActivateAsNodeResponse{
		Name: n.name, Horde: n.horde, VpnPubKey: pubKeyBytes(n.wgKey),
		SigningPubKey: n.signing.Public().(ed25519.PublicKey), WgEndpoint: n.defaultWGEndpoint(),
	}, nil
}

// activationFromProto reads what a node keeps of its activation.
func activationFromProto(req *pubapipb.ActivateAsNodeRequest) (core.NodeActivation, error) {
	cidr, err := records.ParseVPNCIDR(req.GetVpnCidr())
	if err != nil {
		return core.NodeActivation{}, err
	}
	nodeIP, err := netip.ParseAddr(req.GetNodeVpnIp())
	if err != nil || !cidr.Contains(nodeIP) {
		return core.NodeActivation{}, fmt.Errorf("node vpn ip %q is not in %s", req.GetNodeVpnIp(), cidr)
	}
	coIP, err := netip.ParseAddr(req.GetCoordinatorVpnIp())
	if err != nil {
		return core.NodeActivation{}, fmt.Errorf("coordinator vpn ip: %w", err)
	}
	if len(req.GetCoordinatorTlsPin()) == 0 || len(req.GetCoordinatorSigningPubKey()) != ed25519.PublicKeySize {
		return core.NodeActivation{}, errors.New("coordinator tls pin or signing key missing")
	}
	return core.NodeActivation{
		ClusterID: req.GetClusterId(), VPNCIDR: cidr, NodeVPNIP: nodeIP,
		Coordinator: core.CoordinatorInfo{
			Name: req.GetCoordinatorName(), VPNIP: coIP, VPNAPIEndpoint: req.GetCoordinatorVpnapiEndpoint(),
			TLSPin: req.GetCoordinatorTlsPin(), SigningPubKey: req.GetCoordinatorSigningPubKey(),
		},
	}, nil
}

// Leave is the coordinator telling a removed node to leave: the node
// checks the coordinator's signature and stops.
func (p pubServer) Leave(ctx context.Context, req *pubapipb.LeaveRequest) (*pubapipb.LeaveResponse, error) {
	n, err := p.node(ctx)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(req.GetNodeVpnIp())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n.mu.Lock()
	clusterID, vpnIP, key := n.clusterID, n.vpnIP, n.co.SigningPubKey
	n.mu.Unlock()
	lr := core.LeaveRequest{ClusterID: req.GetClusterId(), NodeVPNIP: ip}
	if lr.ClusterID != clusterID || ip != vpnIP || !ed25519.Verify(key, core.LeaveMessage(lr), req.GetSignature()) {
		return nil, status.Error(codes.PermissionDenied, "not this node's coordinator, or not this node")
	}
	n.leave()
	return &pubapipb.LeaveResponse{}, nil
}
