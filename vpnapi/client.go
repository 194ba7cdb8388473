package vpnapi

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/dialopts"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
)

// Dialer connects a node to its coordinator's vpnapi. It implements
// core.CoordinatorDialer.
type Dialer struct {
	// SigningPrivKey is the node's ed25519 key, which the coordinator knows.
	SigningPrivKey ed25519.PrivateKey
	// DialContext opens connections inside the VPN (nil: net.Dialer).
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	// HoldTime is the server's hold time; calls wait that long plus a margin.
	HoldTime time.Duration
}

var _ core.CoordinatorDialer = (*Dialer)(nil)

// DialCoordinator implements core.CoordinatorDialer.
func (d *Dialer) DialCoordinator(_ context.Context, co core.CoordinatorInfo) (core.UpdateClient, error) {
	conn, err := d.dial(co)
	if err != nil {
		return nil, err
	}
	hold := d.HoldTime
	if hold <= 0 {
		hold = DefaultHoldTime
	}
	return &client{conn: conn, api: vpnapipb.NewVPNAPIClient(conn), timeout: hold + 15*time.Second}, nil
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
	opts := append(creds.DialOptions(), dialopts.Reconnect())
	if d.DialContext != nil {
		opts = append(opts, grpc.WithContextDialer(d.DialContext))
	}
	conn, err := grpc.NewClient("passthrough:///"+co.VPNAPIEndpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("dialing vpnapi %s: %w", co.VPNAPIEndpoint, err)
	}
	return conn, nil
}

type client struct {
	conn    *grpc.ClientConn
	api     vpnapipb.VPNAPIClient
	timeout time.Duration
}

func (c *client) WatchUpdates(ctx context.Context, appliedRevision uint64) (core.Update, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.api.WatchUpdates(ctx, &vpnapipb.WatchUpdatesRequest{AppliedRevision: appliedRevision})
	if err != nil {
		return core.Update{}, err
	}
	upd := core.Update{Revision: resp.GetRevision(), Full: resp.GetFull()}
	for _, p := range resp.GetPeers() {
		peer, err := PeerFromProto(p)
		if err != nil {
			return core.Update{}, err
		}
		upd.Peers = append(upd.Peers, peer)
	}
	if u := resp.GetSshUsers(); u != nil {
		upd.SSHUsers = &core.SSHUserSet{Users: SSHUsersFromProto(u)}
	}
	if v := resp.GetView(); v != nil {
		upserts, removed, full := ViewFromProto(v)
		upd.View = &core.ViewUpdate{Full: full, Upserts: upserts, Removed: removed}
	}
	for _, s := range resp.GetRemoved() {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return core.Update{}, fmt.Errorf("removed peer %q: %w", s, err)
		}
		upd.Removed = append(upd.Removed, ip)
	}
	return upd, nil
}

func (c *client) Close() error { return c.conn.Close() }
