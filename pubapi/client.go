package pubapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/status"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/dialopts"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc"
)

// Client is a connection to a peer's pubapi.
type Client struct {
	pubapipb.PubAPIClient
	conn *grpc.ClientConn
}

// Dial connects to the pubapi at endpoint (IP:PORT), proving cfg's
// credential. It does not block; the first call connects.
func Dial(endpoint string, cfg authconn.ClientConfig) (*Client, error) {
	creds, err := authconn.NewClientCredentials(cfg)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+endpoint, append(creds.DialOptions(), dialopts.Reconnect())...)
	if err != nil {
		return nil, fmt.Errorf("dialing pubapi %s: %w", endpoint, err)
	}
	return &Client{PubAPIClient: pubapipb.NewPubAPIClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// NodeActivator implements core.NodeActivator over pubapi with the
// bootstrap key; it signs requests to leave with the coordinator's signing
// key.
type NodeActivator struct {
	bootstrapKey   []byte
	signingPrivKey ed25519.PrivateKey
}

var _ core.NodeActivator = (*NodeActivator)(nil)

// NewNodeActivator returns an activator that proves bootstrapKey and signs
// with signingPrivKey.
func NewNodeActivator(bootstrapKey []byte, signingPrivKey ed25519.PrivateKey) *NodeActivator {
	return &NodeActivator{bootstrapKey: bootstrapKey, signingPrivKey: signingPrivKey}
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
	c, err := Dial(nodePublicEndpoint, authconn.ClientConfig{BootstrapKey: a.bootstrapKey})
	if err != nil {
		return err
	}
	defer c.Close()
	return plain(fn(c))
}

// plain turns a gRPC status error into a sentence ("permission denied: peer
// ... refused our credentials"), for errors that end up in a node's record
// and in the activation's output.
func plain(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	code := strings.ToLower(strings.Join(camelWords.FindAllString(st.Code().String(), -1), " "))
	return fmt.Errorf("%s: %s", code, st.Message())
}

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
			State: core.State(resp.GetState()), ClusterID: resp.GetClusterId(),
			Name: resp.GetName(), Horde: resp.GetHorde(), VPNPubKey: resp.GetVpnPubKey(), SigningPubKey: resp.GetSigningPubKey(),
			StoreID: resp.GetStoreId(),
		}
		return nil
	})
	return st, err
}

// ActivateAsNode implements core.NodeActivator.
func (a *NodeActivator) ActivateAsNode(ctx context.Context, nodePublicEndpoint string, req core.NodeActivation) (records.Activated, error) {
	co := req.Coordinator
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
