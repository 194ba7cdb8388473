package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/spf13/pflag"
)

// Main is fabricd: it parses args (without the program name), runs the
// daemon until ctx ends and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fabricd: %v\n", err)
		return 2
	}
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "fabricd: %v\n", err)
		return 1
	}
	return 0
}

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func parseFlags(args []string, stdout, stderr io.Writer) (Config, error) {
	fs := pflag.NewFlagSet("fabricd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "fabricd is the fabric appliance daemon; every machine of a cluster runs it.\n\nUsage:\n  fabricd --state-dir DIR --listen IP:PORT --bootstrap-key-file FILE [flags]\n\nFlags:\n%s", fs.FlagUsages())
	}
	var (
		cfg       Config
		listen    string
		keyFile   string
		logLevel  string
		hostname  string
		errHostnm error
	)
	hostname, errHostnm = os.Hostname()
	hostname, _, _ = strings.Cut(strings.ToLower(hostname), ".")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "directory of the peer's identity and state (created 0700)")
	fs.StringVar(&listen, "listen", "", "pubapi endpoint IP:PORT; its IP is the peer's public IP")
	fs.StringVar(&keyFile, "bootstrap-key-file", "", "file holding the cluster bootstrap key (from 'fabric key')")
	fs.StringVar(&cfg.Name, "name", hostname, "peer name, unique in the cluster")
	fs.StringVar(&cfg.Horde, "horde", DefaultHorde, "horde (group of services) the peer belongs to")
	fs.IntVar(&cfg.WGPort, "wg-port", DefaultWGPort, "WireGuard UDP port")
	fs.StringVar(&cfg.InterfaceName, "wg-interface", "fabric0", "WireGuard interface name")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&cfg.NoPastiche, "no-pastiche", false, "do not run the pastiche demo service")
	fs.StringVar(&cfg.SSHUsersRoot, "ssh-users-root", "/", "root directory of the SSH users' accounts (etc/passwd, homes): / is the machine's; another is for tests and containers")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (fabricd takes only flags)", fs.Arg(0))
	}
	var err error
	if cfg.Logger, err = newLogger(logLevel, stderr); err != nil {
		return Config{}, err
	}
	switch {
	case cfg.StateDir == "":
		return Config{}, errors.New("--state-dir is required")
	case listen == "":
		return Config{}, errors.New("--listen is required (IP:PORT, the peer's public pubapi endpoint)")
	case keyFile == "":
		return Config{}, errors.New("--bootstrap-key-file is required")
	case cfg.Name == "" && errHostnm != nil:
		return Config{}, fmt.Errorf("--name is required: the hostname is unknown: %w", errHostnm)
	case !namePattern.MatchString(cfg.Name):
		return Config{}, fmt.Errorf("--name %q: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", cfg.Name)
	case !namePattern.MatchString(cfg.Horde):
		return Config{}, fmt.Errorf("--horde %q: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", cfg.Horde)
	case cfg.WGPort < 1 || cfg.WGPort > 65535:
		return Config{}, fmt.Errorf("--wg-port %d: must be 1-65535", cfg.WGPort)
	case !filepath.IsAbs(cfg.SSHUsersRoot):
		return Config{}, fmt.Errorf("--ssh-users-root %q: want an absolute path", cfg.SSHUsersRoot)
	}
	if cfg.Listen, err = parseListen(listen); err != nil {
		return Config{}, err
	}
	if cfg.BootstrapKey, err = bootstrapkey.ReadFile(keyFile); err != nil {
		return Config{}, fmt.Errorf("--bootstrap-key-file: %w", err)
	}
	return cfg, nil
}

func parseListen(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--listen %q: want IP:PORT, e.g. 198.51.100.10:7443", s)
	}
	if ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("--listen %q: needs a specific IP and port; the IP is the peer's public endpoint", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
