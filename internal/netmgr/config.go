package netmgr

import (
	"fmt"
	"log/slog"

	"github.com/fabricmesh/fabric/internal/ifname"
)

// Mode selects the WireGuard implementation.
type Mode string

const (
	// ModeAuto uses kernel WireGuard when available, else wireguard-go.
	ModeAuto Mode = "auto"
	// ModeKernel requires kernel WireGuard.
	ModeKernel Mode = "kernel"
	// ModeUserspace runs wireguard-go in-process on a TUN device.
	ModeUserspace Mode = "userspace"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultInterfaceName = "fabric0"
	DefaultMTU           = 1420
)

const (
	minMTU = 576
	maxMTU = 65535
)

// Config configures a Manager. Zero fields take defaults.
type Config struct {
	// InterfaceName is the WireGuard interface name (default "fabric0").
	InterfaceName string
	// MTU of the interface (default 1420).
	MTU int
	// Mode selects the implementation (default ModeAuto).
	Mode Mode
	// Logger receives the manager's logs and wireguard-go's (at debug
	// level). Nil discards them.
	Logger *slog.Logger
}

// withDefaults returns cfg with zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.InterfaceName == "" {
		cfg.InterfaceName = DefaultInterfaceName
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeAuto
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// validate checks a Config that already has its defaults.
func (cfg Config) validate() error {
	if err := ifname.Validate(cfg.InterfaceName); err != nil {
		return err
	}
	if cfg.MTU < minMTU || cfg.MTU > maxMTU {
		return fmt.Errorf("mtu %d out of range [%d, %d]", cfg.MTU, minMTU, maxMTU)
	}
	switch cfg.Mode {
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		return fmt.Errorf("unknown mode %q (want %q, %q or %q)", cfg.Mode, ModeAuto, ModeKernel, ModeUserspace)
	}
	return nil
}
