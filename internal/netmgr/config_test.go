package netmgr

import (
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{name: "defaults", cfg: Config{}},
		{name: "explicit", cfg: Config{InterfaceName: "wg-fabric.1", MTU: 1280, Mode: ModeUserspace}},
		{name: "kernel mode", cfg: Config{Mode: ModeKernel}},
		{name: "15 bytes", cfg: Config{InterfaceName: "abcdefghijklmno"}},
		{name: "16 bytes", cfg: Config{InterfaceName: "abcdefghijklmnop"}, wantErr: "longer than 15"},
		{name: "dot", cfg: Config{InterfaceName: "."}, wantErr: "not allowed"},
		{name: "dotdot", cfg: Config{InterfaceName: ".."}, wantErr: "not allowed"},
		{name: "slash", cfg: Config{InterfaceName: "a/b"}, wantErr: "'/'"},
		{name: "colon", cfg: Config{InterfaceName: "eth0:1"}, wantErr: "':'"},
		{name: "space", cfg: Config{InterfaceName: "fab 0"}, wantErr: "space"},
		{name: "newline", cfg: Config{InterfaceName: "fab\n0"}, wantErr: "space"},
		{name: "non-ascii", cfg: Config{InterfaceName: "fabé"}, wantErr: "non-ASCII"},
		{name: "mtu too small", cfg: Config{MTU: 100}, wantErr: "mtu 100"},
		{name: "mtu too large", cfg: Config{MTU: 70000}, wantErr: "mtu 70000"},
		{name: "negative mtu", cfg: Config{MTU: -1}, wantErr: "mtu -1"},
		{name: "unknown mode", cfg: Config{Mode: "bpf"}, wantErr: `unknown mode "bpf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New(%+v) = %v, want no error", tt.cfg, err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("New(%+v) succeeded, want error containing %q", tt.cfg, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("New(%+v) = %v, want error containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.InterfaceName != DefaultInterfaceName || m.cfg.MTU != DefaultMTU || m.cfg.Mode != ModeAuto || m.cfg.Logger == nil {
		t.Errorf("defaults: got name %q mtu %d mode %q logger %v", m.cfg.InterfaceName, m.cfg.MTU, m.cfg.Mode, m.cfg.Logger)
	}
	if got := m.Backend(); got != "" {
		t.Errorf("Backend() before Up = %q, want empty", got)
	}
}

func TestClosedManagerRefusesWork(t *testing.T) {
	m, err := New(Config{InterfaceName: "fabnotused0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := t.Context()
	if err := m.SetPeers(ctx, nil); err == nil || !strings.Contains(err.Error(), "fabnotused0") {
		t.Errorf("SetPeers after Close = %v, want error naming the interface", err)
	}
	if err := m.Down(ctx); err == nil {
		t.Error("Down after Close succeeded")
	}
	if _, err := m.Device(); err == nil {
		t.Error("Device after Close succeeded")
	}
}

func TestUpRejectsBadArguments(t *testing.T) {
	m, err := New(Config{InterfaceName: "fabnotused0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	var key wgtypes.Key
	tests := []struct {
		name    string
		port    int
		address netip.Prefix
		wantErr string
	}{
		{name: "negative port", port: -1, address: netip.MustParsePrefix("203.0.113.5/24"), wantErr: "listen port -1"},
		{name: "port too large", port: 65536, address: netip.MustParsePrefix("203.0.113.5/24"), wantErr: "listen port 65536"},
		{name: "no address", port: 51820, wantErr: "invalid address"},
		{name: "unspecified address", port: 51820, address: netip.MustParsePrefix("0.0.0.0/0"), wantErr: "invalid address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.Up(t.Context(), key, tt.port, tt.address)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "fabnotused0") {
				t.Fatalf("Up = %v, want error naming fabnotused0 and containing %q", err, tt.wantErr)
			}
		})
	}
}
