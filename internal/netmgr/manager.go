package netmgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// errClosed is returned by every method called after Close.
var errClosed = errors.New("network manager closed")

// Manager creates and owns one WireGuard interface. It is safe for
// concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	client  *wgctrl.Client   // opened lazily; see wgClient
	backend Mode             // backend of the interface Up made or adopted, "" if none
	user    *userspaceDevice // our wireguard-go device, nil in kernel mode
	closed  bool
	// address is the interface's address, set by Up.
	address netip.Prefix
	// held are the keepalives held back for first handshakes and releases
	// the timers that turn them on (see handshake.go).
	held     map[wgtypes.Key]time.Duration
	releases map[wgtypes.Key]*time.Timer
}

// New validates cfg, applies its defaults and returns a Manager. It touches
// nothing on the system; Up does.
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configuring network manager: %w", err)
	}
	return &Manager{
		cfg:      cfg,
		log:      cfg.Logger.With("interface", cfg.InterfaceName),
		releases: map[wgtypes.Key]*time.Timer{},
	}, nil
}

// Up creates the interface (or adopts an existing kernel WireGuard
// interface of that name, or keeps the one this Manager already runs), sets
// its private key and listen port, makes address its only address, and sets
// the link up. It is idempotent. Existing peers are kept.
func (m *Manager) Up(ctx context.Context, privKey wgtypes.Key, listenPort int, address netip.Prefix) error {
	if err := m.up(ctx, privKey, listenPort, address); err != nil {
		return fmt.Errorf("bringing up %s: %w", m.cfg.InterfaceName, err)
	}
	return nil
}

func (m *Manager) up(ctx context.Context, privKey wgtypes.Key, listenPort int, address netip.Prefix) error {
	if listenPort < 0 || listenPort > 65535 {
		return fmt.Errorf("listen port %d out of range", listenPort)
	}
	if !address.IsValid() || address.Addr().IsUnspecified() {
		return fmt.Errorf("invalid address %s", address)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return err
	}
	link, err := m.ensureInterface()
	if err != nil {
		return err
	}
	if err := m.configureDevice(wgtypes.Config{PrivateKey: &privKey, ListenPort: &listenPort}); err != nil {
		return err
	}
	if err := configureLink(link, address, m.cfg.MTU); err != nil {
		return err
	}
	m.address = address
	if m.user != nil {
		if err := m.user.up(); err != nil {
			return err
		}
	}
	m.log.Info("wireguard interface up", "backend", m.backend, "address", address,
		"listen_port", listenPort, "public_key", privKey.PublicKey())
	return nil
}

// ensureInterface returns the interface's link, creating it if needed.
func (m *Manager) ensureInterface() (netlink.Link, error) {
	link, err := findLink(m.cfg.InterfaceName)
	if err != nil {
		return nil, err
	}
	if link == nil && m.user != nil {
		m.log.Warn("tun interface of the wireguard-go device disappeared, recreating it")
		m.user.close()
		m.user = nil
	}
	if link != nil {
		return link, m.adopt(link)
	}
	return m.create()
}

// adopt accepts an existing link if it is a kernel WireGuard link (and the
// mode allows kernel) or the TUN link of this Manager's own device.
func (m *Manager) adopt(link netlink.Link) error {
	switch {
	case m.user != nil && link.Attrs().Index == m.user.index:
		return m.user.ensureUAPI(m.cfg.InterfaceName)
	case link.Type() == "wireguard" && m.cfg.Mode != ModeUserspace:
		m.backend = ModeKernel
		return nil
	}
	return fmt.Errorf("interface exists (type %s) and is not one this manager can use in mode %s", link.Type(), m.cfg.Mode)
}

// create makes a new interface: kernel WireGuard if the mode allows and the
// kernel supports it, else wireguard-go.
func (m *Manager) create() (netlink.Link, error) {
	if m.cfg.Mode != ModeUserspace {
		link, err := createKernelLink(m.cfg.InterfaceName, m.cfg.MTU)
		if err == nil {
			m.backend = ModeKernel
			m.resetClient() // creating the link may have loaded the module
			return link, nil
		}
		if m.cfg.Mode == ModeKernel || !errors.Is(err, ErrKernelUnsupported) {
			return nil, err
		}
		m.log.Info("kernel wireguard not supported, using wireguard-go")
	}
	u, err := startUserspace(m.cfg.InterfaceName, m.cfg.MTU, m.log)
	if err != nil {
		return nil, err
	}
	m.user = u
	m.backend = ModeUserspace
	link, err := netlink.LinkByIndex(u.index)
	if err != nil {
		return nil, fmt.Errorf("looking up tun link: %w", err)
	}
	return link, nil
}

// SetPeers makes the device's peers exactly peers, applying only the
// difference from the live device (see diffPeers for the semantics of nil
// fields). Duplicate public keys are rejected.
func (m *Manager) SetPeers(ctx context.Context, peers []wgtypes.PeerConfig) error {
	if err := m.setPeers(ctx, peers); err != nil {
		return fmt.Errorf("setting peers on %s: %w", m.cfg.InterfaceName, err)
	}
	return nil
}

func (m *Manager) setPeers(ctx context.Context, peers []wgtypes.PeerConfig) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return err
	}
	dev, err := m.device()
	if err != nil {
		return err
	}
	diff, err := diffPeers(dev.Peers, m.prepare(dev.Peers, peers))
	if err != nil || len(diff) == 0 {
		return err
	}
	if err := m.configureDevice(wgtypes.Config{Peers: diff}); err != nil {
		return err
	}
	m.log.Info("wireguard peers updated", "peers", len(peers), "changes", len(diff))
	return nil
}

// Down removes the interface. It succeeds if there is none.
func (m *Manager) Down(ctx context.Context) error {
	if err := m.down(ctx); err != nil {
		return fmt.Errorf("removing %s: %w", m.cfg.InterfaceName, err)
	}
	return nil
}

func (m *Manager) down(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usable(ctx); err != nil {
		return err
	}
	m.forgetPeers()
	if m.user != nil {
		m.user.close()
		m.user = nil
	}
	m.backend = ""
	link, err := findLink(m.cfg.InterfaceName)
	if err != nil || link == nil {
		return err
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("deleting link: %w", err)
	}
	m.log.Info("wireguard interface removed")
	return nil
}

// Close releases the Manager's resources at daemon exit. A wireguard-go
// device stops and its interface disappears with it; a kernel interface is
// left configured for the next Manager to adopt. Later calls fail.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.forgetPeers()
	if m.user != nil {
		m.user.close()
		m.user = nil
	}
	if m.client == nil {
		return nil
	}
	err := m.client.Close()
	m.client = nil
	if err != nil {
		return fmt.Errorf("closing wgctrl client for %s: %w", m.cfg.InterfaceName, err)
	}
	return nil
}

// Backend reports the backend of the interface Up created or adopted
// (ModeKernel or ModeUserspace), or "" before Up and after Down.
func (m *Manager) Backend() Mode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backend
}

// Device returns the live state of the device.
func (m *Manager) Device() (*wgtypes.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("inspecting %s: %w", m.cfg.InterfaceName, errClosed)
	}
	dev, err := m.device()
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", m.cfg.InterfaceName, err)
	}
	return dev, nil
}

// LastHandshake returns the time of the last handshake with peer (the zero
// time if there was none, or the peer is unknown).
func (m *Manager) LastHandshake(_ context.Context, peer wgtypes.Key) (time.Time, error) {
	dev, err := m.Device()
	if err != nil {
		return time.Time{}, err
	}
	for _, p := range dev.Peers {
		if p.PublicKey == peer {
			return p.LastHandshakeTime, nil
		}
	}
	return time.Time{}, nil
}

// usable reports why the Manager cannot act now, if it cannot.
func (m *Manager) usable(ctx context.Context) error {
	if m.closed {
		return errClosed
	}
	return ctx.Err()
}

// device reads the live device with wgctrl. m.mu must be held.
func (m *Manager) device() (*wgtypes.Device, error) {
	c, err := m.wgClient()
	if err != nil {
		return nil, err
	}
	dev, err := c.Device(m.cfg.InterfaceName)
	if err != nil {
		return nil, fmt.Errorf("reading device: %w", err)
	}
	return dev, nil
}

// configureDevice applies cfg with wgctrl. m.mu must be held.
func (m *Manager) configureDevice(cfg wgtypes.Config) error {
	c, err := m.wgClient()
	if err != nil {
		return err
	}
	if err := c.ConfigureDevice(m.cfg.InterfaceName, cfg); err != nil {
		return fmt.Errorf("configuring device: %w", err)
	}
	return nil
}

// wgClient returns the wgctrl client, opening it if needed. wgctrl decides
// at open time whether the kernel speaks WireGuard, so resetClient drops it
// after a kernel link is created. m.mu must be held.
func (m *Manager) wgClient() (*wgctrl.Client, error) {
	if m.client != nil {
		return m.client, nil
	}
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("opening wgctrl client: %w", err)
	}
	m.client = c
	return c, nil
}

// resetClient closes the wgctrl client so the next use opens a fresh one.
func (m *Manager) resetClient() {
	if m.client != nil {
		if err := m.client.Close(); err != nil {
			m.log.Debug("closing wgctrl client", "error", err)
		}
		m.client = nil
	}
}
