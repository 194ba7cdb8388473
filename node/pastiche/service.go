package pastiche

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"google.golang.org/grpc"
)

// ClientReeve is what a client of pastiche needs of its peer's reeve: the
// endpoints it may call, and signed dial options.
type ClientReeve interface {
	EndpointsUp(ctx context.Context, clientID, service string) ([]reeve.Endpoint, error)
	DialOptions(clientID string) []grpc.DialOption
}

// Reeve is what pastiche needs of its peer's reeve (in process: a
// *reeve.Reeve).
type Reeve interface {
	ClientReeve
	RegisterEndpoint(ctx context.Context, service string, port uint16) (id, address string, err error)
	RegisterClient(ctx context.Context, service string) (string, error)
	ServerOptions(endpointID string) []grpc.ServerOption
}

var _ Reeve = (*reeve.Reeve)(nil)

// Config is what Start needs.
type Config struct {
	Reeve Reeve
	// Dir holds the stored files, <state dir>/pastiche (made if missing).
	Dir string
	// Listen listens on an address inside the VPN.
	Listen func(ctx context.Context, addr netip.AddrPort) (net.Listener, error)
	Logger *slog.Logger
}

// Service is a running pastiche.
type Service struct {
	reeve Reeve
	id    string // the endpoint's ID, also its client's
	node  string
	dir   string
	log   *slog.Logger
	wg    sync.WaitGroup
}

// Start registers the pastiche endpoint and client with the reeve and serves
// the endpoint on the peer's VPN IP, port serviceid.PastichePort, until ctx
// ends. Leftovers of transfers cut by a crash are removed first.
func Start(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Reeve == nil || cfg.Dir == "" || cfg.Listen == nil {
		return nil, errors.New("pastiche: Reeve, Dir and Listen are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("making pastiche directory: %w", err)
	}
	if err := removeTemp(cfg.Dir); err != nil {
		return nil, fmt.Errorf("cleaning pastiche directory: %w", err)
	}
	s, addr, err := register(ctx, cfg)
	if err != nil {
		return nil, err
	}
	lis, err := cfg.Listen(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("listening for %s on %s: %w", s.id, addr, err)
	}
	opts := append(cfg.Reeve.ServerOptions(s.id), grpc.WaitForHandlers(true), grpc.MaxRecvMsgSize(MaxMessageSize))
	srv := grpc.NewServer(opts...)
	pastichepb.RegisterPasticheServer(srv, handler{s: s})
	s.serve(ctx, srv, lis)
	s.log.Info("pastiche started", "address", addr, "dir", s.dir)
	return s, nil
}

// register registers the endpoint and the client and returns the service
// and the address to listen on.
func register(ctx context.Context, cfg Config) (*Service, netip.AddrPort, error) {
	id, address, err := cfg.Reeve.RegisterEndpoint(ctx, serviceid.Pastiche, serviceid.PastichePort)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("registering the pastiche endpoint: %w", err)
	}
	addr, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("pastiche endpoint address %q: %w", address, err)
	}
	clientID, err := cfg.Reeve.RegisterClient(ctx, serviceid.Pastiche)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("registering the pastiche client: %w", err)
	}
	_, node, err := serviceid.Parse(id)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("pastiche endpoint: %w", err)
	}
	if clientID != id {
		return nil, netip.AddrPort{}, fmt.Errorf("pastiche client %s and endpoint %s differ", clientID, id)
	}
	s := &Service{reeve: cfg.Reeve, id: id, node: node, dir: cfg.Dir, log: cfg.Logger.With("endpoint", id)}
	return s, addr, nil
}

// serve runs srv on lis until ctx ends. Stopping waits for the handlers, so
// that every cut transfer has removed its temporary file when Wait returns.
func (s *Service) serve(ctx context.Context, srv *grpc.Server, lis net.Listener) {
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(lis)
	}()
	go func() {
		defer s.wg.Done()
		<-ctx.Done()
		srv.Stop()
	}()
}

// Wait blocks until the service has stopped after its context ended.
func (s *Service) Wait() { s.wg.Wait() }

// ID returns the service's endpoint ID, pastiche@<node>, which is also the
// keyId of its client.
func (s *Service) ID() string { return s.id }
