package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/netmgr"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/vpnapi"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// vpnOptions are the flags of `fabric vpn up`.
type vpnOptions struct {
	iface      string
	listenPort int
	// endpoint is auto, none or IP:PORT.
	endpoint  string
	wireguard string
}

// Defaults of `fabric vpn up`. The interface has the name wg-quick gives
// the bundle's fabric-vpn.conf, so the two cannot run side by side, and
// the port is the one that file sets, so the endpoint the coordinator
// recorded stays right for either.
const (
	defaultVPNInterface  = "fabric-vpn"
	defaultVPNListenPort = 51821
	// vpnReadyTimeout bounds how long `fabric vpn up` waits for the first
	// revision of the coordinator's watch; the interface already has the
	// peers of the cluster status by then.
	vpnReadyTimeout = 20 * time.Second
)

// vpnDaemon is the process of `fabric vpn up`: it puts this machine on the
// VPN and keeps it there until ctx ends.
type vpnDaemon struct {
	admin *adminDir
	opts  vpnOptions
	log   *slog.Logger
	// ready, if set, is told once (see report) that the daemon is up ("")
	// or why it is not.
	ready     func(problem string)
	readyOnce sync.Once
}

// report tells ready, the first time only, that the daemon is up ("") or
// why it is not.
func (d *vpnDaemon) report(problem string) {
	d.readyOnce.Do(func() {
		if d.ready != nil {
			d.ready(problem)
		}
	})
}

// run brings the VPN up and keeps it until ctx ends, then removes the
// interface and the daemon's files.
func (d *vpnDaemon) run(ctx context.Context) error {
	lock, err := lockPID(d.admin.path)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := d.refuseForeignInterface(); err != nil {
		return err
	}
	cfg, err := d.clusterConfig(ctx)
	if err != nil {
		return err
	}
	wg, err := netmgr.New(netmgr.Config{InterfaceName: d.opts.iface, Mode: netmgr.Mode(d.opts.wireguard), Logger: d.log.With("component", "netmgr")})
	if err != nil {
		return err
	}
	cfg.Network = wg
	defer func() {
		if err := wg.Down(context.WithoutCancel(ctx)); err != nil {
			d.log.Error("removing the vpn interface", "err", err)
		}
		wg.Close()
		os.Remove(d.admin.file(vpnStateFile))
	}()
	st := vpnState{PID: os.Getpid(), StartedAt: time.Now().UTC(), Interface: d.opts.iface, AdminVPNIP: cfg.Address.String(),
		ListenPort: cfg.ListenPort, WGEndpoint: cfg.WGEndpoint}
	firstRevision := make(chan struct{})
	var once sync.Once
	cfg.Observe = func(s core.AdminVPNState) {
		st.Backend, st.Coordinator, st.Revision, st.LastError = string(wg.Backend()), s.Watching, s.Revision, s.LastError
		st.UpdatedAt, st.Peers = time.Now().UTC(), statePeers(s.Peers, cfg.Address.Addr())
		if err := writeVPNState(d.admin.path, st); err != nil {
			d.log.Error("writing the vpn state", "err", err)
		}
		if s.Revision > 0 {
			once.Do(func() { close(firstRevision) })
		}
	}
	d.log.Info("bringing the admin onto the vpn", "interface", d.opts.iface, "address", cfg.Address, "listen_port", cfg.ListenPort,
		"wg_endpoint", cfg.WGEndpoint, "peers", len(cfg.Peers), "coordinator", cfg.Coordinator.Name)
	done := make(chan error, 1)
	go func() { done <- core.RunAdminVPN(ctx, cfg) }()
	return d.wait(ctx, done, firstRevision)
}

// wait tells ready when the first revision is applied (or, after
// vpnReadyTimeout, that the interface is up without a watch yet), then
// waits for RunAdminVPN to end.
func (d *vpnDaemon) wait(ctx context.Context, done <-chan error, firstRevision <-chan struct{}) error {
	timer := time.NewTimer(vpnReadyTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err == nil {
			err = ctx.Err()
		}
		d.report(describeUpError(err))
		return err
	case <-firstRevision:
		d.report("")
	case <-timer.C:
		st, _ := readVPNState(d.admin.path)
		d.report("")
		d.log.Warn("the coordinator's watch gave no revision yet; the interface has the peers of the cluster status", "last_error", st.LastError)
	}
	err := <-done
	d.log.Info("leaving the vpn", "err", err)
	return err
}

// describeUpError is err for an operator, with a hint when it lacks the
// privilege to make interfaces.
func describeUpError(err error) string {
	if err == nil {
		return "stopped"
	}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, os.ErrPermission) {
		return err.Error() + " (fabric vpn up needs root or CAP_NET_ADMIN)"
	}
	return err.Error()
}

// refuseForeignInterface refuses to take over an interface of the
// daemon's name: wg-quick's, or one a daemon that did not stop cleanly
// left.
func (d *vpnDaemon) refuseForeignInterface() error {
	exists, err := netmgr.LinkExists(d.opts.iface)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("interface %s exists: 'wg-quick down %s' if wg-quick made it, or 'fabric vpn down' if an earlier 'fabric vpn up' left it",
			d.opts.iface, d.admin.file(wgQuickFile))
	}
	return nil
}

// clusterConfig asks a coordinator of the bundle for the cluster and
// returns the admin's VPN configuration with the active peers.
func (d *vpnDaemon) clusterConfig(ctx context.Context) (core.AdminVPNConfig, error) {
	a := d.admin
	callCtx, cancel := context.WithTimeout(ctx, defaultCallTimeout)
	defer cancel()
	client, err := a.dial()
	if err != nil {
		return core.AdminVPNConfig{}, err
	}
	defer client.Close()
	resp, err := client.GetState(callCtx, &pubapipb.GetStateRequest{})
	if err != nil {
		return core.AdminVPNConfig{}, rpcError("asking the coordinator for the cluster", err)
	}
	cluster := resp.GetCluster()
	if cluster == nil {
		return core.AdminVPNConfig{}, fmt.Errorf("coordinator %s is %s and reports no cluster: %s", resp.GetPublicEndpoint(), resp.GetState(), resp.GetFailure())
	}
	cidr, err := netip.ParsePrefix(cluster.GetVpnCidr())
	if err != nil {
		return core.AdminVPNConfig{}, fmt.Errorf("cluster vpn cidr %q: %w", cluster.GetVpnCidr(), err)
	}
	self, err := netip.ParseAddr(a.bundle.AdminVPNIP)
	if err != nil {
		return core.AdminVPNConfig{}, fmt.Errorf("admin vpn ip %q in %s: %w", a.bundle.AdminVPNIP, a.file(bundleFile), err)
	}
	peers, err := activePeers(cluster)
	if err != nil {
		return core.AdminVPNConfig{}, err
	}
	co, vpnapiPort, err := watchedCoordinator(resp, peers)
	if err != nil {
		return core.AdminVPNConfig{}, err
	}
	endpoint, err := d.wgEndpoint(co)
	if err != nil {
		return core.AdminVPNConfig{}, err
	}
	return core.AdminVPNConfig{
		VPNPrivKey: a.adminVPNPrivKey, ListenPort: d.opts.listenPort, Address: netip.PrefixFrom(self, cidr.Bits()),
		Peers: peers, Coordinator: co, VPNAPIPort: vpnapiPort, WGEndpoint: endpoint,
		Dialer: &vpnapi.Dialer{SigningPrivKey: a.adminSigningKey}, Logger: d.log.With("component", "admin-vpn"),
	}, nil
}

// activePeers are the cluster's active peers as a node's watch would give
// them.
func activePeers(cluster *pubapipb.ClusterStatus) ([]records.Peer, error) {
	var out []records.Peer
	for _, p := range cluster.GetPeers() {
		if p.GetState() != string(records.StateActive) {
			continue
		}
		ip, err := netip.ParseAddr(p.GetVpnIp())
		if err != nil {
			return nil, fmt.Errorf("peer %s: vpn ip %q: %w", p.GetName(), p.GetVpnIp(), err)
		}
		r := records.Peer{Name: p.GetName(), Role: records.Role(p.GetRole()), VPNIP: ip, WGEndpoint: p.GetWgEndpoint(),
			WGPubKey: p.GetWgPubKey(), State: records.StateActive}
		if r.Role == records.RoleCoordinator {
			r.TLSPin, r.SigningPubKey = p.GetTlsPin(), p.GetSigningPubKey()
		}
		out = append(out, r)
	}
	return out, nil
}

// watchedCoordinator is the coordinator that answered, to watch first, and
// the port of its vpnapi (the other coordinators' too).
func watchedCoordinator(resp *pubapipb.GetStateResponse, peers []records.Peer) (core.CoordinatorInfo, int, error) {
	ep, err := netip.ParseAddrPort(resp.GetVpnapiEndpoint())
	if err != nil {
		return core.CoordinatorInfo{}, 0, fmt.Errorf("coordinator %s does not say where its vpnapi listens (%q); is its fabricd older than this fabric?",
			resp.GetPublicEndpoint(), resp.GetVpnapiEndpoint())
	}
	for _, p := range peers {
		if p.VPNIP != ep.Addr() || p.Role != records.RoleCoordinator {
			continue
		}
		key, err := wgtypes.NewKey(p.WGPubKey)
		if err != nil {
			return core.CoordinatorInfo{}, 0, fmt.Errorf("coordinator %s: wireguard key: %w", p.Name, err)
		}
		return core.CoordinatorInfo{
			Name: p.Name, VPNIP: p.VPNIP, VPNPubKey: key, WGEndpoint: p.WGEndpoint, VPNAPIEndpoint: ep.String(),
			TLSPin: p.TLSPin, SigningPubKey: p.SigningPubKey,
		}, int(ep.Port()), nil
	}
	return core.CoordinatorInfo{}, 0, fmt.Errorf("coordinator %s at VPN IP %s is not among the cluster's active peers", resp.GetName(), ep.Addr())
}

// wgEndpoint is the endpoint to tell the coordinator: --endpoint, or with
// auto the address this machine reaches the coordinator's WireGuard from
// (its peers on the same network reach it there), or "" with none.
func (d *vpnDaemon) wgEndpoint(co core.CoordinatorInfo) (string, error) {
	switch d.opts.endpoint {
	case "none":
		return "", nil
	case "auto":
	default:
		return d.opts.endpoint, nil
	}
	c, err := net.Dial("udp", co.WGEndpoint)
	if err != nil {
		return "", fmt.Errorf("finding this machine's address toward coordinator %s at %s (give --endpoint): %w", co.Name, co.WGEndpoint, err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return netip.AddrPortFrom(local, uint16(d.opts.listenPort)).String(), nil
}

// statePeers are the peers for vpn.state, without self.
func statePeers(peers []records.Peer, self netip.Addr) []vpnStatePeer {
	out := []vpnStatePeer{}
	for _, p := range peers {
		if p.VPNIP == self {
			continue
		}
		out = append(out, vpnStatePeer{Name: p.Name, Role: string(p.Role), VPNIP: p.VPNIP.String(),
			WGPubKey: base64.StdEncoding.EncodeToString(p.WGPubKey), WGEndpoint: p.WGEndpoint})
	}
	return out
}

// newVPNLogger logs the daemon's work to w.
func newVPNLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
