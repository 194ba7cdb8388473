package reeve

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Start serves the reeve until ctx ends: its endpoint on the VPN IP (the
// registration callback), the local API on its unix socket, and the loop
// that registers the peer and keeps the steward up to date with the peer's
// services. Wait waits for all of it after ctx ends.
func (r *Reeve) Start(ctx context.Context) error {
	wg := &r.wg
	addr := netip.AddrPortFrom(r.cfg.VPNIP, serviceid.ReevePort)
	lis, err := r.cfg.VPN.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listening for the reeve endpoint on %s: %w", addr, err)
	}
	srv := grpc.NewServer(r.ServerOptions(r.ID(serviceid.Reeve))...)
	reevepb.RegisterReeveServer(srv, challengeServer{r: r})
	serve(ctx, wg, srv, lis)
	if r.cfg.SocketPath != "" {
		if err := r.serveLocal(ctx); err != nil {
			return err
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.run(ctx)
	}()
	r.log.Info("reeve started", "endpoint", addr, "socket", r.cfg.SocketPath, "registered", r.Registered())
	return nil
}

// Wait blocks until everything Start started has stopped.
func (r *Reeve) Wait() { r.wg.Wait() }

// ServerOptions are the gRPC options of a signed endpoint of this peer:
// calls are verified against the endpoint's whitelist, and must be signed
// for its address (the reeve's own endpoint, or one registered with
// RegisterEndpoint; any other endpoint refuses every call).
func (r *Reeve) ServerOptions(endpointID string) []grpc.ServerOption {
	return signedrpc.ServerOptions(signedrpc.ServerConfig{
		Host:      r.endpointAddress(endpointID),
		Whitelist: r.Whitelist(endpointID),
		Replay:    r.replay,
		Logger:    r.log.With("endpoint", endpointID),
	})
}

// endpointAddress is the address of this peer's endpoint endpointID,
// <VPN IP>:<port>, or "" if it is not one of its endpoints.
func (r *Reeve) endpointAddress(endpointID string) string {
	service, node, err := serviceid.Parse(endpointID)
	if err != nil || node != r.cfg.Node {
		return ""
	}
	port := uint16(serviceid.ReevePort)
	if service != serviceid.Reeve {
		r.mu.RLock()
		p, ok := r.endpoints[service]
		r.mu.RUnlock()
		if !ok {
			return ""
		}
		port = p
	}
	return netip.AddrPortFrom(r.cfg.VPNIP, port).String()
}

// DialOptions are the gRPC options of a signed client of this peer: calls
// go through the VPN and are signed with clientID's key.
func (r *Reeve) DialOptions(clientID string) []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(r.cfg.VPN.Dial),
	}, signedrpc.DialOptions(clientID, r)...)
}

// serve runs srv on lis until ctx ends.
func serve(ctx context.Context, wg *sync.WaitGroup, srv *grpc.Server, lis net.Listener) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = srv.Serve(lis)
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		srv.Stop()
	}()
}

// The crash points of the registration on the reeve's side (see
// internal/crashpoint).
var (
	crashChallengeSigned = crashpoint.New("node/reeve/challenge-signed",
		"the reeve signed the registry's nonce; the registry has not seen the signature")
	crashRegistered = crashpoint.New("node/reeve/registered",
		"the coordinator answered that the reeve is registered; the reeve has not checkpointed it")
)

// challengeServer answers the registry's callback.
type challengeServer struct {
	reevepb.UnimplementedReeveServer
	r *Reeve
}

func (s challengeServer) Challenge(ctx context.Context, req *reevepb.ChallengeRequest) (*reevepb.ChallengeResponse, error) {
	caller, _ := signedrpc.Caller(ctx)
	if _, ok := s.r.registryKey(caller); !ok {
		return nil, status.Errorf(codes.PermissionDenied, "only the registry may challenge this reeve, not %s", caller)
	}
	if len(req.GetNonce()) < 16 {
		return nil, status.Error(codes.InvalidArgument, "nonce too short")
	}
	sig, err := s.r.Sign(ctx, s.r.ID(serviceid.Reeve), serviceid.ChallengeMessage(s.r.cfg.ClusterID, s.r.cfg.Node, req.GetNonce()))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	crashChallengeSigned.Hit()
	return &reevepb.ChallengeResponse{Signature: sig}, nil
}

// run registers the peer (once; the registration is checkpointed) and then
// sends the peer's services to the steward whenever they change, retrying
// with backoff while the coordinator cannot be reached. If the steward
// refuses the reeve's signature (the coordinator does not hold this reeve
// as registered, or holds another key), the reeve registers again.
func (r *Reeve) run(ctx context.Context) {
	b := &backoff{log: r.log, min: r.cfg.MinBackoff, max: r.cfg.MaxBackoff, next: r.cfg.MinBackoff}
	for {
		for !r.Registered() {
			err := r.register(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil || !b.retry(ctx, "registration", err) {
				return
			}
		}
		b.reset()
		r.markDirty()
		if !r.syncServices(ctx, b) {
			return
		}
	}
}

// syncServices sends the services to the steward whenever they change. It
// returns false when ctx ends, true when the reeve must register again.
func (r *Reeve) syncServices(ctx context.Context, b *backoff) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-r.dirty:
		}
		for {
			err := r.updateServices(ctx)
			if err == nil {
				b.reset()
				break
			}
			if status.Code(err) == codes.Unauthenticated {
				r.log.Warn("the steward refuses this reeve's signature; registering again", "err", err)
				if ferr := r.forgetRegistration(); ferr != nil {
					r.log.Error("registering again", "err", ferr)
				}
				// The backoff keeps a steward that always refuses (a
				// clock far off) from being hammered.
				return b.retry(ctx, "updating the steward", err)
			}
			if ctx.Err() != nil || !b.retry(ctx, "updating the steward", err) {
				return false
			}
		}
	}
}

// backoff spaces the retries of a failing call: min, doubling up to max,
// back to min after a success.
type backoff struct {
	log            *slog.Logger
	min, max, next time.Duration
}

// retry logs the failure and waits; false if ctx ended first.
func (b *backoff) retry(ctx context.Context, what string, err error) bool {
	b.log.Warn(what+" failed; retrying", "in", b.next, "err", err)
	t := time.NewTimer(b.next)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	b.next = min(2*b.next, b.max)
	return true
}

func (b *backoff) reset() { b.next = b.min }

func (r *Reeve) register(ctx context.Context) error {
	pub, _ := r.PubKey(serviceid.Reeve)
	if err := r.cfg.Register(ctx, pub); err != nil {
		return fmt.Errorf("registering with the coordinator: %w", err)
	}
	crashRegistered.Hit()
	r.log.Info("registered with the coordinator")
	return r.saveRegistered()
}

// updateServices sends the peer's endpoints and clients to the steward (the
// reeve's own are known from the registration; the steward refuses the
// other reserved names).
func (r *Reeve) updateServices(ctx context.Context) error {
	req := &vpnapipb.UpdateServicesRequest{}
	r.mu.RLock()
	for service, port := range r.endpoints {
		req.Endpoints = append(req.Endpoints, &vpnapipb.ServiceEndpoint{Service: service, Port: uint32(port)})
	}
	for service, key := range r.keys {
		if !reserved[service] {
			req.Clients = append(req.Clients, &vpnapipb.ServiceClient{Service: service, PubKey: key.Public().(ed25519.PublicKey)})
		}
	}
	r.mu.RUnlock()
	var first error
	for _, addr := range r.stewards() {
		err := r.sendServices(ctx, addr, req)
		if err == nil {
			r.log.Debug("services sent to the steward", "steward", addr, "endpoints", len(req.Endpoints), "clients", len(req.Clients))
			return nil
		}
		if status.Code(err) == codes.Unauthenticated {
			return err // this steward's coordinator does not know the reeve's key: register again
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func (r *Reeve) sendServices(ctx context.Context, addr string, req *vpnapipb.UpdateServicesRequest) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, r.DialOptions(r.ID(serviceid.Reeve))...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := vpnapipb.NewStewardClient(conn).UpdateServices(ctx, req); err != nil {
		return fmt.Errorf("steward %s: %w", addr, err)
	}
	return nil
}

// stewards are the steward endpoints to try, in order: the configured one
// (the activating coordinator's), then those of the other coordinators
// that the view lets the reeve use.
func (r *Reeve) stewards() []string {
	out := []string{r.cfg.StewardAddress}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.index.endpoints[r.ID(serviceid.Reeve)][serviceid.Steward] {
		if e.Address != r.cfg.StewardAddress {
			out = append(out, e.Address)
		}
	}
	slices.Sort(out[1:])
	return out
}
