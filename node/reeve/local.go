package reeve

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// The local API serves the same calls as the Reeve's methods over a unix
// socket in the state directory. Its mode (0600, owner root) is the access
// control: whoever may open it acts as the peer's services.

// serveLocal listens on the socket (replacing a stale one) and serves.
func (r *Reeve) serveLocal(ctx context.Context) error {
	path := r.cfg.SocketPath
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale reeve socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on reeve socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return fmt.Errorf("securing reeve socket %s: %w", path, err)
	}
	srv := grpc.NewServer()
	reevepb.RegisterLocalReeveServer(srv, localServer{r: r})
	serve(ctx, &r.wg, srv, lis)
	return nil
}

type localServer struct {
	reevepb.UnimplementedLocalReeveServer
	r *Reeve
}

func invalid(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

func (s localServer) RegisterEndpoint(ctx context.Context, req *reevepb.RegisterEndpointRequest) (*reevepb.RegisterEndpointResponse, error) {
	if req.GetPort() > 65535 {
		return nil, status.Errorf(codes.InvalidArgument, "port %d out of range", req.GetPort())
	}
	id, addr, err := s.r.RegisterEndpoint(ctx, req.GetService(), uint16(req.GetPort()))
	if err != nil {
		return nil, invalid(err)
	}
	return &reevepb.RegisterEndpointResponse{Endpoint: id, Address: addr}, nil
}

// RegisterClient refuses fabric-admin, the coordinator's own client, which
// fabricd registers in process.
func (s localServer) RegisterClient(ctx context.Context, req *reevepb.RegisterClientRequest) (*reevepb.RegisterClientResponse, error) {
	if req.GetService() == serviceid.FabricAdmin {
		return nil, status.Errorf(codes.PermissionDenied, "%s is the coordinator's own client; services cannot register it", serviceid.FabricAdmin)
	}
	id, err := s.r.RegisterClient(ctx, req.GetService())
	if err != nil {
		return nil, invalid(err)
	}
	return &reevepb.RegisterClientResponse{Client: id}, nil
}

func (s localServer) Catalog(ctx context.Context, req *reevepb.CatalogRequest) (*reevepb.CatalogResponse, error) {
	services, err := s.r.Catalog(ctx, req.GetClient())
	if err != nil {
		return nil, invalid(err)
	}
	return &reevepb.CatalogResponse{Services: services}, nil
}

func (s localServer) EndpointsUp(ctx context.Context, req *reevepb.EndpointsUpRequest) (*reevepb.EndpointsUpResponse, error) {
	eps, err := s.r.EndpointsUp(ctx, req.GetClient(), req.GetService())
	if err != nil {
		return nil, invalid(err)
	}
	resp := &reevepb.EndpointsUpResponse{}
	for _, e := range eps {
		resp.Endpoints = append(resp.Endpoints, &reevepb.Endpoint{Endpoint: e.ID, Service: e.Service, Address: e.Address})
	}
	return resp, nil
}

func (s localServer) Sign(ctx context.Context, req *reevepb.SignRequest) (*reevepb.SignResponse, error) {
	sig, err := s.r.Sign(ctx, req.GetClient(), req.GetData())
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return &reevepb.SignResponse{Signature: sig}, nil
}

func (s localServer) Lookup(_ context.Context, req *reevepb.LookupRequest) (*reevepb.LookupResponse, error) {
	key, err := s.r.Lookup(req.GetEndpoint(), req.GetClient())
	switch {
	case errors.Is(err, httpsig.ErrNotWhitelisted):
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		return nil, status.Error(codes.NotFound, err.Error())
	}
	return &reevepb.LookupResponse{PubKey: key}, nil
}

// Client is a service's connection to its peer's reeve over the local
// socket; it offers the same calls as Reeve.
type Client struct {
	conn *grpc.ClientConn
	api  reevepb.LocalReeveClient
}

// DialLocal connects to the reeve socket at path (absolute, or relative to
// the working directory).
func DialLocal(path string) (*Client, error) {
	conn, err := grpc.NewClient("unix:"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dialing reeve socket %s: %w", path, err)
	}
	return &Client{conn: conn, api: reevepb.NewLocalReeveClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// RegisterEndpoint is Reeve.RegisterEndpoint over the socket.
func (c *Client) RegisterEndpoint(ctx context.Context, service string, port uint16) (id, address string, err error) {
	resp, err := c.api.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: service, Port: uint32(port)})
	return resp.GetEndpoint(), resp.GetAddress(), err
}

// RegisterClient is Reeve.RegisterClient over the socket.
func (c *Client) RegisterClient(ctx context.Context, service string) (string, error) {
	resp, err := c.api.RegisterClient(ctx, &reevepb.RegisterClientRequest{Service: service})
	return resp.GetClient(), err
}

// Catalog is Reeve.Catalog over the socket.
func (c *Client) Catalog(ctx context.Context, clientID string) ([]string, error) {
	resp, err := c.api.Catalog(ctx, &reevepb.CatalogRequest{Client: clientID})
	return resp.GetServices(), err
}

// EndpointsUp is Reeve.EndpointsUp over the socket.
func (c *Client) EndpointsUp(ctx context.Context, clientID, service string) ([]Endpoint, error) {
	resp, err := c.api.EndpointsUp(ctx, &reevepb.EndpointsUpRequest{Client: clientID, Service: service})
	if err != nil {
		return nil, err
	}
	var out []Endpoint
	for _, e := range resp.GetEndpoints() {
		out = append(out, Endpoint{ID: e.GetEndpoint(), Service: e.GetService(), Address: e.GetAddress()})
	}
	return out, nil
}

// Sign is Reeve.Sign over the socket; it implements signedrpc.Signer.
func (c *Client) Sign(ctx context.Context, keyID string, data []byte) ([]byte, error) {
	resp, err := c.api.Sign(ctx, &reevepb.SignRequest{Client: keyID, Data: data})
	return resp.GetSignature(), err
}

// Lookup is Reeve.Lookup over the socket, with the same errors.
func (c *Client) Lookup(endpointID, client string) (ed25519.PublicKey, error) {
	resp, err := c.api.Lookup(context.Background(), &reevepb.LookupRequest{Endpoint: endpointID, Client: client})
	switch status.Code(err) {
	case codes.OK:
		return resp.GetPubKey(), nil
	case codes.PermissionDenied:
		return nil, fmt.Errorf("%w: %s", httpsig.ErrNotWhitelisted, status.Convert(err).Message())
	case codes.NotFound:
		return nil, fmt.Errorf("%w: %s", httpsig.ErrUnknownKey, status.Convert(err).Message())
	}
	return nil, err
}

// Whitelist returns the whitelist of a local endpoint, for signedrpc.
func (c *Client) Whitelist(endpointID string) Whitelist {
	return Whitelist{r: c, endpoint: endpointID}
}
