package pubapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/dialopts"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Client is a connection to a peer's pubapi.
type Client struct {
	pubapipb.PubAPIClient
	conn     *grpc.ClientConn
	endpoint string
}

// Dial connects to the pubapi at endpoint (IP:PORT), proving cfg's
// credential, with extra options (such as Keepalive). It does not block;
// the first call connects.
func Dial(endpoint string, cfg authconn.ClientConfig, extra ...grpc.DialOption) (*Client, error) {
	creds, err := authconn.NewClientCredentials(cfg)
	if err != nil {
		return nil, err
	}
	opts := append(creds.DialOptions(), dialopts.Reconnect())
	conn, err := grpc.NewClient("passthrough:///"+endpoint, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("dialing pubapi %s: %w", endpoint, err)
	}
	return &Client{PubAPIClient: pubapipb.NewPubAPIClient(conn), conn: conn, endpoint: endpoint}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Endpoint is the endpoint the client dialed.
func (c *Client) Endpoint() string { return c.endpoint }

// Keepalive: a client of a stream that may stay silent for long (fabric
// events --follow) pings the server after KeepaliveTime without a frame and
// gives the connection up KeepaliveTimeout later without an answer, so it
// notices a coordinator that went away without closing the connection (a
// machine powered off, a network cut). The server lets clients ping every
// KeepaliveMinTime (KeepalivePolicy).
const (
	KeepaliveTime    = 15 * time.Second
	KeepaliveTimeout = 10 * time.Second
	KeepaliveMinTime = 10 * time.Second
)

// Keepalive is the dial option of such a client.
func Keepalive() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout})
}

// KeepalivePolicy is the server option that lets clients ping as often as
// Keepalive does.
func KeepalivePolicy() grpc.ServerOption {
	return grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true})
}

// NodeActivator implements core.NodeActivator over pubapi with the
// bootstrap key; it signs requests to leave with the coordinator's signing
// key.
type NodeActivator struct {
	bootstrapKey   []byte
	signingPrivKey ed25519.PrivateKey
	dialOpts       []grpc.DialOption
}

var _ core.NodeActivator = (*NodeActivator)(nil)

// NewNodeActivator returns an activator that proves bootstrapKey and signs
// with signingPrivKey; opts add to the options of its connections.
func NewNodeActivator(bootstrapKey []byte, signingPrivKey ed25519.PrivateKey, opts ...grpc.DialOption) *NodeActivator {
	return &NodeActivator{bootstrapKey: bootstrapKey, signingPrivKey: signingPrivKey, dialOpts: opts}
}

// Leave implements core.NodeActivator.
func (a *NodeActivator) Leave(ctx context.Context, nodePublicEndpoint string, req core.LeaveRequest) error {
	return a.call(nodePublicEndpoint, func(c *Client) error {
		_, err := c.PubAPIClient.Leave(ctx, &pubapipb.LeaveRequest{
			ClusterId: req.ClusterID, NodeVpnIp: req.NodeVPNIP.String(),
			Signature: ed25519.Sign(a.signingPrivKey, core.LeaveMessage(req)),
		})
		return err
	})
}

func (a *NodeActivator) call(nodePublicEndpoint string, fn func(*Client) error) error {
	c, err := Dial(nodePublicEndpoint, authconn.ClientConfig{BootstrapKey: a.bootstrapKey}, a.dialOpts...)
	if err != nil {
		return err
	}
	// Closing waits for the connection's goroutines to end, which on a
	// busy coordinator takes a while: the activation does not wait.
	defer func() { go c.Close() }()
	return plain(fn(c))
}

// plain turns a gRPC status error into a sentence ("permission denied: peer
// ... refused our credentials"), for errors that end up in a node's record
// and in the activation's output. An error that is not the node's answer
// (it could not be reached, the call timed out or broke) is marked
// core.ErrUnanswered.
func plain(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	code := strings.ToLower(strings.Join(camelWords.FindAllString(st.Code().String(), -1), " "))
	out := fmt.Errorf("%s: %s", code, st.Message())
	if unanswered(st.Code()) {
		return unansweredError{out}
	}
	return out
}

// unanswered reports whether a call that failed with code may have had no
// answer from the peer: the transport's codes, not a handler's.
func unanswered(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// unansweredError is a call's error marked core.ErrUnanswered, with the
// call's own message.
type unansweredError struct{ error }

func (e unansweredError) Is(target error) bool { return target == core.ErrUnanswered }

func (e unansweredError) Unwrap() error { return e.error }

var camelWords = regexp.MustCompile(`[A-Z][a-z]*`)

// GetNodeState implements core.NodeActivator.
func (a *NodeActivator) GetNodeState(ctx context.Context, nodePublicEndpoint string) (core.NodeState, error) {
	var st core.NodeState
	err := a.call(nodePublicEndpoint, func(c *Client) error {
		resp, err := c.GetState(ctx, &pubapipb.GetStateRequest{})
		if err != nil {
			return err
		}
		st = core.NodeState{
			State: core.State(resp.GetState()), ClusterID: resp.GetClusterId(), VPNIP: parseAddrOrZero(resp.GetVpnIp()),
			Name: resp.GetName(), Horde: resp.GetHorde(), VPNPubKey: resp.GetVpnPubKey(), SigningPubKey: resp.GetSigningPubKey(),
			StoreID: resp.GetStoreId(),
		}
		return nil
	})
	return st, err
}

// parseAddrOrZero parses s, or returns the zero address.
func parseAddrOrZero(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

// ActivateAsNode implements core.NodeActivator.
func (a *NodeActivator) ActivateAsNode(ctx context.Context, nodePublicEndpoint string, req core.NodeActivation) (records.Activated, error) {
	co := req.Coordinator
	var others []*pubapipb.CoordinatorInfo
	for _, o := range req.OtherCoordinators {
		others = append(others, &pubapipb.CoordinatorInfo{
			Name: o.Name, VpnIp: o.VPNIP.String(), VpnPubKey: o.VPNPubKey[:], WgEndpoint: o.WGEndpoint,
			VpnapiEndpoint: o.VPNAPIEndpoint, TlsPin: o.TLSPin, SigningPubKey: o.SigningPubKey,
		})
	}
	var out records.Activated
	err := a.call(nodePublicEndpoint, func(c *Client) error {
		resp, err := c.PubAPIClient.ActivateAsNode(ctx, &pubapipb.ActivateAsNodeRequest{
			ClusterId:                 req.ClusterID,
			VpnCidr:                   req.VPNCIDR.String(),
			NodeVpnIp:                 req.NodeVPNIP.String(),
			CoordinatorVpnIp:          co.VPNIP.String(),
			CoordinatorVpnPubKey:      co.VPNPubKey[:],
			CoordinatorWgEndpoint:     co.WGEndpoint,
			CoordinatorVpnapiEndpoint: co.VPNAPIEndpoint,
			CoordinatorTlsPin:         co.TLSPin,
			CoordinatorName:           co.Name,
			CoordinatorSigningPubKey:  co.SigningPubKey,
			OtherCoordinators:         others,
		})
		if err != nil {
			return err
		}
		out = records.Activated{
			Name: resp.GetName(), Horde: resp.GetHorde(), WGEndpoint: resp.GetWgEndpoint(),
			WGPubKey: resp.GetVpnPubKey(), SigningPubKey: resp.GetSigningPubKey(),
		}
		return nil
	})
	return out, err
}
