package netmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The root tests run each network namespace's Manager in a child process
// (the test binary itself, re-executed under ip netns exec with helperEnv
// set), because netlink, TUN and the UDP socket act in the namespace of the
// calling process. Parent and child speak JSON lines over the child's stdin
// and stdout.

const helperEnv = "FABRIC_NETMGR_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper(os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// request is one operation on the child's Manager.
type request struct {
	Op      string     `json:"op"` // new, up, setpeers (answers as device), device, handshake (of Peers[0]), hammer, down, close
	Name    string     `json:"name,omitempty"`
	Mode    Mode       `json:"mode,omitempty"`
	PrivKey string     `json:"priv_key,omitempty"`
	Port    int        `json:"port,omitempty"`
	Address string     `json:"address,omitempty"`
	Peers   []peerSpec `json:"peers,omitempty"`
}

// response is the child's answer to a request.
type response struct {
	Err               string     `json:"err,omitempty"`
	KernelUnsupported bool       `json:"kernel_unsupported,omitempty"`
	Backend           Mode       `json:"backend,omitempty"`
	PublicKey         string     `json:"public_key,omitempty"`
	ListenPort        int        `json:"listen_port,omitempty"`
	Peers             []peerSpec `json:"peers,omitempty"`
	LastHandshake     time.Time  `json:"last_handshake,omitzero"`
}

// peerSpec is a peer in a form both sides can write and compare.
type peerSpec struct {
	PublicKey  string   `json:"public_key"`
	Endpoint   string   `json:"endpoint,omitempty"`
	AllowedIPs []string `json:"allowed_ips,omitempty"` // sorted
	Keepalive  int      `json:"keepalive,omitempty"`   // seconds
}

func (p peerSpec) config() (wgtypes.PeerConfig, error) {
	key, err := wgtypes.ParseKey(p.PublicKey)
	if err != nil {
		return wgtypes.PeerConfig{}, err
	}
	cfg := wgtypes.PeerConfig{PublicKey: key}
	if p.Endpoint != "" {
		ap, err := netip.ParseAddrPort(p.Endpoint)
		if err != nil {
			return wgtypes.PeerConfig{}, err
		}
		cfg.Endpoint = net.UDPAddrFromAddrPort(ap)
	}
	for _, s := range p.AllowedIPs {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return wgtypes.PeerConfig{}, err
		}
		cfg.AllowedIPs = append(cfg.AllowedIPs, *n)
	}
	if p.Keepalive != 0 {
		ka := time.Duration(p.Keepalive) * time.Second
		cfg.PersistentKeepaliveInterval = &ka
	}
	return cfg, nil
}

func specOf(p wgtypes.Peer) peerSpec {
	s := peerSpec{PublicKey: p.PublicKey.String(), Keepalive: int(p.PersistentKeepaliveInterval / time.Second)}
	if p.Endpoint != nil {
		s.Endpoint = unmapped(p.Endpoint).String()
	}
	for _, n := range p.AllowedIPs {
		s.AllowedIPs = append(s.AllowedIPs, toPrefix(n).String())
	}
	slices.Sort(s.AllowedIPs)
	return s
}

// helper is the child side: one Manager driven by requests.
type helper struct {
	log *slog.Logger
	m   *Manager
}

func runHelper(stdin io.Reader, stdout, stderr io.Writer) int {
	baseline := runtime.NumGoroutine()
	h := &helper{log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	dec, enc := json.NewDecoder(stdin), json.NewEncoder(stdout)
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(stderr, "helper: reading request: %v\n", err)
				return 2
			}
			break
		}
		if err := enc.Encode(h.handle(req)); err != nil {
			fmt.Fprintf(stderr, "helper: writing response: %v\n", err)
			return 2
		}
	}
	h.closeManager()
	return checkGoroutines(baseline, stderr)
}

// checkGoroutines waits for the goroutine count to fall back to baseline
// and dumps the stacks if it does not.
func checkGoroutines(baseline int, stderr io.Writer) int {
	for range 50 {
		if runtime.NumGoroutine() <= baseline {
			return 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	fmt.Fprintf(stderr, "helper: goroutine leak (%d > %d):\n%s\n", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
	return 3
}

func (h *helper) handle(req request) response {
	resp, err := h.dispatch(req)
	if err != nil {
		resp.Err = err.Error()
		resp.KernelUnsupported = errors.Is(err, ErrKernelUnsupported)
	}
	if h.m != nil {
		resp.Backend = h.m.Backend()
	}
	return resp
}

func (h *helper) dispatch(req request) (response, error) {
	ctx := context.Background()
	if req.Op == "new" {
		return response{}, h.newManager(req)
	}
	if h.m == nil {
		return response{}, errors.New("no manager: send op new first")
	}
	switch req.Op {
	case "up":
		return response{}, h.up(ctx, req)
	case "setpeers":
		peers, err := peerConfigs(req.Peers)
		if err != nil {
			return response{}, err
		}
		if err := h.m.SetPeers(ctx, peers); err != nil {
			return response{}, err
		}
		// The device as SetPeers left it, before any held keepalive is
		// released (handshake.go): read here at once, not after a round
		// trip to the test, which a slow machine can make longer than
		// releaseAfter.
		return h.device()
	case "device":
		return h.device()
	case "handshake":
		if len(req.Peers) != 1 {
			return response{}, errors.New("handshake: name one peer")
		}
		key, err := wgtypes.ParseKey(req.Peers[0].PublicKey)
		if err != nil {
			return response{}, err
		}
		last, err := h.m.LastHandshake(ctx, key)
		return response{LastHandshake: last}, err
	case "hammer":
		return response{}, h.hammer(ctx, req)
	case "down":
		return response{}, h.m.Down(ctx)
	case "close":
		return response{}, h.m.Close()
	}
	return response{}, fmt.Errorf("unknown op %q", req.Op)
}

func (h *helper) newManager(req request) error {
	h.closeManager()
	m, err := New(Config{InterfaceName: req.Name, Mode: req.Mode, Logger: h.log})
	h.m = m
	return err
}

func (h *helper) closeManager() {
	if h.m != nil {
		if err := h.m.Close(); err != nil {
			h.log.Error("closing manager", "error", err)
		}
	}
}

func (h *helper) up(ctx context.Context, req request) error {
	key, err := wgtypes.ParseKey(req.PrivKey)
	if err != nil {
		return err
	}
	addr, err := netip.ParsePrefix(req.Address)
	if err != nil {
		return err
	}
	return h.m.Up(ctx, key, req.Port, addr)
}

func (h *helper) device() (response, error) {
	dev, err := h.m.Device()
	if err != nil {
		return response{}, err
	}
	resp := response{PublicKey: dev.PublicKey.String(), ListenPort: dev.ListenPort}
	for _, p := range dev.Peers {
		resp.Peers = append(resp.Peers, specOf(p))
	}
	slices.SortFunc(resp.Peers, func(a, b peerSpec) int { return strings.Compare(a.PublicKey, b.PublicKey) })
	return resp, nil
}

// hammer calls the Manager from several goroutines at once, for the race
// detector; every SetPeers asks for the same peer set.
func (h *helper) hammer(ctx context.Context, req request) error {
	peers, err := peerConfigs(req.Peers)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*3)
	for range 8 {
		wg.Go(func() {
			for range 3 {
				_ = h.m.Backend()
				if _, err := h.m.Device(); err != nil {
					errs <- err
				}
			}
			errs <- h.m.SetPeers(ctx, peers)
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func peerConfigs(specs []peerSpec) ([]wgtypes.PeerConfig, error) {
	var out []wgtypes.PeerConfig
	for _, s := range specs {
		cfg, err := s.config()
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", s.PublicKey, err)
		}
		out = append(out, cfg)
	}
	return out, nil
}
