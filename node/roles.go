package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/fabricmesh/fabric/coordinator"
	"github.com/fabricmesh/fabric/coordinator/events"
	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/liveness"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/node/pastiche"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// services implements core.RoleServices and core.ViewApplier: what a peer
// runs once it has a role.
type services struct{ d *Daemon }

// coordinatorServices is what an active coordinator runs beside core: the
// feed its nodes and its own reeve follow, the liveness of its peers and
// the events. It implements pubapi.Coordinator.
type coordinatorServices struct {
	reg     *registry.Registry
	feed    *feed.Feed
	tracker *liveness.Tracker
	hub     *events.Hub
	catalog coordinator.Catalog
}

// StartCoordinator serves the coordinator's APIs inside the VPN (the vpnapi
// with the watch and the registration handshake, and the steward endpoint),
// and starts the coordinator's own reeve, which follows the coordinator's
// view through the feed like every node.
func (s services) StartCoordinator(ctx context.Context, self records.Peer) (core.Feed, error) {
	d := s.d
	cl, _ := d.reg.Cluster()
	rs, err := rules.ParseOrDefault("cluster rules", cl.Rules)
	if err != nil {
		return nil, err
	}
	if d.cfg.ClusterStore != nil {
		// Other coordinators commit to the shared store too.
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.reg.Follow(ctx, followInterval, func(err error) { d.log.Warn("following the cluster's store", "err", err) })
		}()
	}
	co := &coordinatorServices{reg: d.reg, hub: events.NewHub(), catalog: coordinator.Catalog{Registry: d.reg, Rules: rs}}
	d.reg.Observe(co.hub.Entries)
	if co.feed, err = feed.New(d.reg, rs, feed.Options{}); err != nil {
		return nil, err
	}
	var leader liveness.Leader
	if elector, ok := d.cfg.ClusterStore.(store.Elector); ok {
		l := &coordinator.Leadership{Elector: elector, Name: "liveness-expiry", Value: d.cfg.Name, Logger: d.log.With("component", "leadership")}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			l.Run(ctx)
		}()
		leader = l
	}
	co.tracker = liveness.New(liveness.Config{
		Registry: d.reg, Self: self.VPNIP, SelfName: self.Name, Shared: d.cfg.ClusterStore != nil,
		OfflineAfter: d.cfg.OfflineAfter, Silence: vpnapi.Silence(d.keepalive()), Current: co.feed.Current, Leader: leader,
		Applied: func(ip netip.Addr, rev uint64) {
			p, _ := d.reg.Peer(ip)
			co.hub.Publish(events.Event{Revision: rev, At: d.now(), Kind: events.Applied, Node: p.Name, VPNIP: ip})
		},
	})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		co.tracker.Run(ctx)
	}()
	d.coord.Store(co)
	registrar := &coordinator.Registrar{
		Registry: d.reg, CoordinatorName: d.cfg.Name, SigningPrivKey: d.id.SigningPrivKey,
		DialContext: d.vpn.Dial, Logger: d.log.With("component", "registrar"),
	}
	if err := d.serveVPNAPI(ctx, self.VPNIP, vpnapi.Config{
		Registry: d.reg, Registrar: registrar, Feed: co.feed, Liveness: co.tracker, Keepalive: d.keepalive(),
	}); err != nil {
		return nil, err
	}
	if err := d.serveSteward(ctx, self.VPNIP); err != nil {
		return nil, err
	}
	info := core.CoordinatorInfo{
		Name: d.cfg.Name, VPNIP: self.VPNIP, SigningPubKey: d.id.SigningPubKey(),
		VPNAPIEndpoint: netip.AddrPortFrom(self.VPNIP, uint16(d.cfg.VPNAPIPort)).String(), TLSPin: d.id.TLSCertPin,
	}
	r, err := d.startReeve(ctx, cl.ID, self.VPNIP, info)
	if err != nil {
		return nil, err
	}
	if err := d.startPastiche(ctx, r); err != nil {
		return nil, err
	}
	if !d.cfg.NoPastiche {
		admin, err := r.RegisterClient(ctx, serviceid.FabricAdmin)
		if err != nil {
			return nil, err
		}
		d.relay.Store(&pastiche.Relay{Reeve: r, ClientID: admin})
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.followOwnView(ctx, co.feed, r, self.VPNIP)
	}()
	return co.feed, nil
}

// StartNode starts the node's reeve, which registers with the coordinator,
// and pastiche.
func (s services) StartNode(ctx context.Context, cfg core.NodeConfig) error {
	r, err := s.d.startReeve(ctx, cfg.ClusterID, cfg.VPNIP, cfg.Coordinator)
	if err != nil {
		return err
	}
	return s.d.startPastiche(ctx, r)
}

// Removed implements core.RoleServices: the daemon stops and Run starts it
// over with a wiped state directory.
func (s services) Removed(context.Context) error {
	s.d.removedOnce.Do(func() { close(s.d.removed) })
	return nil
}

// startPastiche starts the pastiche demo service, unless disabled.
func (d *Daemon) startPastiche(ctx context.Context, r *reeve.Reeve) error {
	if d.cfg.NoPastiche {
		return nil
	}
	p, err := pastiche.Start(ctx, pastiche.Config{
		Reeve: r, Dir: filepath.Join(d.cfg.StateDir, "pastiche"), Listen: d.vpn.Listen,
		Logger: d.log.With("component", "pastiche"),
	})
	if err != nil {
		return fmt.Errorf("starting pastiche: %w", err)
	}
	d.pastiche.Store(p)
	return nil
}

// ApplyView hands a node's view to its reeve.
func (s services) ApplyView(ctx context.Context, rev uint64, v update.ViewUpdate) error {
	r := s.d.reeve.Load()
	if r == nil {
		return errors.New("reeve is not running")
	}
	return r.ApplyView(ctx, rev, v)
}

func (d *Daemon) serveVPNAPI(ctx context.Context, ip netip.Addr, cfg vpnapi.Config) error {
	addr := netip.AddrPortFrom(ip, uint16(d.cfg.VPNAPIPort))
	creds, err := authconn.NewServerCredentials(authconn.ServerConfig{
		Certificate:      d.id.TLSCert,
		LookupSigningKey: vpnapi.LookupSigningKey(cfg.Registry),
		Logger:           d.log.With("component", "vpnapi"),
	})
	if err != nil {
		return err
	}
	raw, err := d.vpn.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listening for the vpnapi on %s: %w", addr, err)
	}
	lis, err := vpnapi.Listener(raw)
	if err != nil {
		raw.Close()
		return fmt.Errorf("listening for the vpnapi on %s: %w", addr, err)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(creds)}, vpnapi.ServerOptions()...)...)
	vpnapipb.RegisterVPNAPIServer(srv, vpnapi.NewServer(cfg))
	d.serve(srv, lis, "vpnapi")
	d.log.Info("serving vpnapi", "endpoint", addr)
	return nil
}

// serveSteward serves the steward endpoint: signed calls from registered
// reeves.
func (d *Daemon) serveSteward(ctx context.Context, ip netip.Addr) error {
	addr := netip.AddrPortFrom(ip, serviceid.StewardPort)
	lis, err := d.vpn.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listening for the steward on %s: %w", addr, err)
	}
	srv := grpc.NewServer(signedrpc.ServerOptions(signedrpc.ServerConfig{
		Host:      addr.String(),
		Whitelist: coordinator.StewardWhitelist{Registry: d.reg},
		Replay:    httpsig.NewReplayCache(reeve.ReplayCapacity),
		Logger:    d.log.With("component", "steward"),
	})...)
	vpnapipb.RegisterStewardServer(srv, &coordinator.StewardServer{Registry: d.reg})
	d.serve(srv, lis, "steward")
	d.log.Info("serving steward", "endpoint", addr)
	return nil
}

// startReeve starts the peer's reeve (also on a restart: its state comes
// back from the store).
func (d *Daemon) startReeve(ctx context.Context, clusterID string, vpnIP netip.Addr, co core.CoordinatorInfo) (*reeve.Reeve, error) {
	r, err := reeve.New(reeve.Config{
		Store: d.store, Node: d.cfg.Name, VPNIP: vpnIP, ClusterID: clusterID,
		CoordinatorName: co.Name, CoordinatorSigningPubKey: co.SigningPubKey,
		OtherCoordinators: func() map[string]ed25519.PublicKey {
			keys := map[string]ed25519.PublicKey{}
			for _, c := range d.core.Coordinators() {
				keys[c.Name] = c.SigningPubKey
			}
			return keys
		},
		StewardAddress: netip.AddrPortFrom(co.VPNIP, serviceid.StewardPort).String(),
		VPN:            d.vpn,
		Register: func(ctx context.Context, pub []byte) error {
			return d.register(ctx, co, pub)
		},
		SocketPath: filepath.Join(d.cfg.StateDir, "reeve.sock"),
		Logger:     d.log.With("component", "reeve"),
	})
	if err != nil {
		return nil, err
	}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	d.reeve.Store(r)
	return r, nil
}

// register runs the registration handshake with the coordinator co or,
// when it cannot be reached, with the other coordinators this node knows.
func (d *Daemon) register(ctx context.Context, co core.CoordinatorInfo, reevePubKey []byte) error {
	coordinators := d.core.Coordinators()
	if len(coordinators) == 0 {
		coordinators = []core.CoordinatorInfo{co}
	}
	var first error
	for _, c := range coordinators {
		err := d.dialer.Register(ctx, c, reevePubKey)
		if err == nil || status.Code(err) == codes.PermissionDenied {
			return err // done, or refused by the cluster: another coordinator says the same
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// followOwnView keeps the coordinator's reeve on the coordinator's view,
// from the feed like any node's.
func (d *Daemon) followOwnView(ctx context.Context, f *feed.Feed, r *reeve.Reeve, ip netip.Addr) {
	_, applied := r.View()
	for {
		u, err := f.Next(ctx, ip, applied, 0)
		if err != nil {
			return
		}
		if u.View.Kind != update.ViewUnchanged {
			if err := r.ApplyView(ctx, u.Revision, u.View); err != nil {
				d.log.Warn("applying the coordinator's view; starting over from a full view", "err", err)
				applied = 0
				continue
			}
		}
		applied = u.Revision
	}
}

// Catalog implements pubapi.Coordinator.
func (co *coordinatorServices) Catalog() (rs []string, endpoints, clients []pubapi.ServiceRecord) {
	rs, eps, cls := co.catalog.Records()
	for _, e := range eps {
		endpoints = append(endpoints, pubapi.ServiceRecord{Service: e.Service, Node: e.Node, Port: e.Port})
	}
	for _, c := range cls {
		clients = append(clients, pubapi.ServiceRecord{Service: c.Service, Node: c.Node})
	}
	return rs, endpoints, clients
}

// Liveness implements pubapi.Coordinator.
func (co *coordinatorServices) Liveness(ip netip.Addr) pubapi.Liveness {
	st := co.tracker.Status(ip)
	return pubapi.Liveness{Online: st.Online, LastSeen: st.LastSeen, Applied: st.Applied, CoordinatorHandshakeAge: st.CoordinatorHandshakeAge, Watching: st.Watching}
}

// Events implements pubapi.Coordinator.
func (co *coordinatorServices) Events(ctx context.Context, since uint64, follow bool, fn func(pubapi.Event) error) error {
	err := co.hub.Stream(ctx, co.reg, since, follow, func(e events.Event) error {
		return fn(pubapi.Event(e))
	})
	switch {
	case errors.Is(err, registry.ErrCompacted):
		return fmt.Errorf("%w: %v", pubapi.ErrEventsCompacted, err)
	case errors.Is(err, events.ErrBehind):
		return fmt.Errorf("%w: %v", pubapi.ErrEventsBehind, err)
	}
	return err
}

// pasticheRelay is the coordinator's pastiche relay as the pubapi uses it.
type pasticheRelay struct{ r *pastiche.Relay }

func (p pasticheRelay) Send(ctx context.Context, from, to, name string, size int64, body io.Reader) (pubapi.RelayResult, error) {
	res, err := p.r.Send(ctx, from, to, name, size, body)
	return pubapi.RelayResult(res), err
}

// keepalive is the coordinator's keepalive on its watches.
func (d *Daemon) keepalive() time.Duration {
	if d.cfg.Keepalive > 0 {
		return d.cfg.Keepalive
	}
	return vpnapi.DefaultKeepalive
}
