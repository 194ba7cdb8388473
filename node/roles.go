package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"

	"github.com/fabricmesh/fabric/coordinator"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/node/pastiche"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
)

// services implements core.RoleServices and core.ViewApplier: what a peer
// runs once it has a role.
type services struct{ d *Daemon }

// StartCoordinator serves the coordinator's APIs inside the VPN (the vpnapi
// with the registration handshake and the views, and the steward endpoint)
// and starts the coordinator's own reeve, which gets its view straight from
// the steward.
func (s services) StartCoordinator(ctx context.Context, reg *registry.Registry) error {
	d := s.d
	cl, _ := reg.Cluster()
	rules, err := rules.ParseOrDefault("cluster rules", cl.Rules)
	if err != nil {
		return err
	}
	views := coordinator.NewViews(reg, rules)
	d.views.Store(views)
	registrar := &coordinator.Registrar{
		Registry: reg, CoordinatorName: d.cfg.Name, SigningPrivKey: d.id.SigningPrivKey,
		DialContext: d.vpn.Dial, Logger: d.log.With("component", "registrar"),
	}
	if err := d.serveVPNAPI(ctx, cl.CoordinatorVPNIP, vpnapi.Config{
		Registry: reg, Registrar: registrar, Views: views, HoldTime: d.cfg.HoldTime,
	}); err != nil {
		return err
	}
	if err := d.serveSteward(ctx, cl.CoordinatorVPNIP, reg); err != nil {
		return err
	}
	co := core.CoordinatorInfo{
		Name: d.cfg.Name, VPNIP: cl.CoordinatorVPNIP, SigningPubKey: d.id.SigningPubKey(),
		VPNAPIEndpoint: netip.AddrPortFrom(cl.CoordinatorVPNIP, uint16(d.cfg.VPNAPIPort)).String(), TLSPin: d.id.TLSCertPin,
	}
	r, err := d.startReeve(ctx, cl.ID, cl.CoordinatorVPNIP, co)
	if err != nil {
		return err
	}
	if err := d.startPastiche(ctx, r); err != nil {
		return err
	}
	if !d.cfg.NoPastiche {
		admin, err := r.RegisterClient(ctx, serviceid.FabricAdmin)
		if err != nil {
			return err
		}
		d.relay.Store(&pastiche.Relay{Reeve: r, ClientID: admin})
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.applyOwnViews(ctx, reg, views, r, cl.CoordinatorVPNIP)
	}()
	return nil
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
func (s services) ApplyView(ctx context.Context, rev uint64, v core.ViewUpdate) error {
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
	lis, err := d.vpn.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listening for the vpnapi on %s: %w", addr, err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	vpnapipb.RegisterVPNAPIServer(srv, vpnapi.NewServer(cfg))
	d.serve(srv, lis, "vpnapi")
	d.log.Info("serving vpnapi", "endpoint", addr)
	return nil
}

// serveSteward serves the steward endpoint: signed calls from registered
// reeves.
func (d *Daemon) serveSteward(ctx context.Context, ip netip.Addr, reg *registry.Registry) error {
	addr := netip.AddrPortFrom(ip, serviceid.StewardPort)
	lis, err := d.vpn.Listen(ctx, addr)
	if err != nil {
		return fmt.Errorf("listening for the steward on %s: %w", addr, err)
	}
	srv := grpc.NewServer(signedrpc.ServerOptions(signedrpc.ServerConfig{
		Whitelist: coordinator.StewardWhitelist{Registry: reg},
		Replay:    httpsig.NewReplayCache(reeve.ReplayCapacity),
		Logger:    d.log.With("component", "steward"),
	})...)
	vpnapipb.RegisterStewardServer(srv, &coordinator.StewardServer{Registry: reg})
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
		StewardAddress: netip.AddrPortFrom(co.VPNIP, serviceid.StewardPort).String(),
		VPN:            d.vpn,
		Register: func(ctx context.Context, pub []byte) error {
			return d.dialer.Register(ctx, co, pub)
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

// applyOwnViews keeps the coordinator's reeve on the coordinator's view.
func (d *Daemon) applyOwnViews(ctx context.Context, reg *registry.Registry, views *coordinator.Views, r *reeve.Reeve, ip netip.Addr) {
	var applied uint64
	for {
		view, rev, ok, err := views.For(ctx, ip)
		if err != nil {
			return
		}
		if ok && rev != applied {
			if err := r.ApplyView(ctx, rev, core.ViewUpdate{Full: true, Upserts: view}); err != nil {
				d.log.Warn("applying the coordinator's view", "err", err)
			} else {
				applied = rev
			}
		}
		if _, err := reg.Wait(ctx, rev); err != nil {
			return
		}
	}
}

// pasticheRelay is the coordinator's pastiche relay as the pubapi uses it.
type pasticheRelay struct{ r *pastiche.Relay }

func (p pasticheRelay) Send(ctx context.Context, from, to, name string, size int64, body io.Reader) (pubapi.RelayResult, error) {
	res, err := p.r.Send(ctx, from, to, name, size, body)
	return pubapi.RelayResult(res), err
}
