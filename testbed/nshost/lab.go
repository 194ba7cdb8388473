package nshost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultGrace   = 5 * time.Second
	switchName     = "sw"  // the switch namespace is <Prefix>-sw
	bridgeName     = "br0" // the bridge inside the switch namespace
	hostLinkName   = "eth0"
	firstHostOctet = 10  // hosts get .10, .11, ...
	lastHostOctet  = 254 // ... up to .254
	parallelism    = 8   // concurrent ip(8) invocations when creating or deleting many hosts
	wireguardRun   = "/run/wireguard"
)

// allowedUnderlays are the only underlay networks a lab may use: documentation
// ranges that cannot clash with real networks.
var allowedUnderlays = []netip.Prefix{
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
}

var (
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.]{0,31}$`)
	labSeq   atomic.Int64 // makes default prefixes unique within one process
)

// Config configures a Lab.
type Config struct {
	// Prefix starts every namespace name of the lab (<Prefix>-sw,
	// <Prefix>-<host>); it must be unique per run. Letters, digits, '_' and
	// '.', at most 32 characters. Default: "fab" + the PID + a sequence number.
	Prefix string
	// Underlay is the network the hosts' eth0 addresses come from. Default
	// 198.51.100.0/24; only 198.51.100.0/24 and 192.0.2.0/24 are allowed.
	Underlay netip.Prefix
	// WorkDir holds one directory per host (logs, private /run/wireguard).
	// Required; created if missing.
	WorkDir string
	// Logger receives progress lines. Nil discards them.
	Logger *slog.Logger
	// Grace is how long Process.Stop and Lab.Close wait after SIGTERM before
	// sending SIGKILL. Default 5s.
	Grace time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = fmt.Sprintf("fab%d_%d", os.Getpid(), labSeq.Add(1))
	}
	if !prefixRE.MatchString(c.Prefix) {
		return c, fmt.Errorf("invalid prefix %q: want 1-32 letters, digits, '_' or '.', starting with a letter or digit", c.Prefix)
	}
	if !c.Underlay.IsValid() {
		c.Underlay = allowedUnderlays[0]
	}
	if !underlayAllowed(c.Underlay) {
		return c, fmt.Errorf("underlay %s not allowed: use 198.51.100.0/24 or 192.0.2.0/24", c.Underlay)
	}
	if c.WorkDir == "" {
		return c, errors.New("config: WorkDir is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Grace <= 0 {
		c.Grace = defaultGrace
	}
	return c, nil
}

func underlayAllowed(p netip.Prefix) bool {
	for _, a := range allowedUnderlays {
		if p == a {
			return true
		}
	}
	return false
}

// Lab is a set of hosts joined by one bridge, all in namespaces of their own.
// Its methods are safe for concurrent use.
type Lab struct {
	cfg      Config
	log      *slog.Logger
	switchNS string

	// life is read-held while hosts or processes are being created and
	// write-held by Close, so Close never races a half-made host.
	life   sync.RWMutex
	closed bool // written under life.Lock, read under life.RLock

	mu         sync.Mutex
	hosts      []*Host // reserved hosts, in address order
	nextOctet  int
	namespaces []string // every namespace we tried to create
	procs      []*Process
	onClose    []func() error
	closeErr   error

	sshOnce sync.Once // makes the SSH key of the lab's VMs
	sshErr  error
}

// New checks the machine (see Check) and creates a lab: a switch namespace
// holding a bridge and no uplink. Hosts are added with AddHost or AddHosts.
// Call Close when done. If New fails, it has already removed what it made.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("creating lab: %w", err)
	}
	if err := Check(); err != nil {
		return nil, fmt.Errorf("creating lab %s: %w", cfg.Prefix, err)
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating lab %s: %w", cfg.Prefix, err)
	}
	// The mount point for each host's private /run/wireguard. Creating an
	// empty directory here changes nothing for other users of it.
	if err := os.MkdirAll(wireguardRun, 0o755); err != nil {
		return nil, fmt.Errorf("creating lab %s: %w", cfg.Prefix, err)
	}
	l := &Lab{
		cfg:       cfg,
		log:       cfg.Logger.With("lab", cfg.Prefix),
		switchNS:  cfg.Prefix + "-" + switchName,
		nextOctet: firstHostOctet,
	}
	if err := l.createSwitch(ctx); err != nil {
		err = fmt.Errorf("creating lab %s: %w", cfg.Prefix, err)
		return nil, errors.Join(err, l.Close())
	}
	l.log.Info("lab created", "switch", l.switchNS, "underlay", cfg.Underlay, "workdir", cfg.WorkDir)
	return l, nil
}

// createSwitch makes the switch namespace and its bridge. The bridge has no
// address and the namespace no other link: nothing leaves the lab.
func (l *Lab) createSwitch(ctx context.Context) error {
	// Made before any host, and alone: the first `ip netns add` of a machine
	// also turns /run/netns into a shared mount, which must not race.
	if err := l.addNamespace(ctx, l.switchNS); err != nil {
		return err
	}
	return runIPBatch(ctx, l.switchNS,
		"link add "+bridgeName+" type bridge",
		"link set "+bridgeName+" up",
	)
}

// addNamespace creates a namespace and records it for Close. A name that is
// taken fails here and is not recorded, so Close never deletes a namespace
// the lab did not make.
func (l *Lab) addNamespace(ctx context.Context, name string) error {
	if err := runIP(ctx, "netns", "add", name); err != nil {
		return err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	return nil
}

// Prefix returns the prefix of every namespace name of the lab.
func (l *Lab) Prefix() string { return l.cfg.Prefix }

// Hosts returns the hosts that were created successfully, in address order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	var hs []*Host
	for _, h := range l.hosts {
		if h.ready {
			hs = append(hs, h)
		}
	}
	return hs
}

// Close stops every process the lab started (SIGTERM, then SIGKILL after
// the grace period; only those PIDs are signalled) and deletes every
// namespace the lab created, with their links. It is idempotent and also
// cleans up after a failed New or AddHost. It leaves WorkDir and its logs.
func (l *Lab) Close() error {
	l.life.Lock()
	defer l.life.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	l.log.Info("closing lab")
	l.closeErr = errors.Join(l.runOnClose(), l.stopAll(), l.deleteNamespaces())
	if l.closeErr != nil {
		l.closeErr = fmt.Errorf("closing lab %s: %w", l.cfg.Prefix, l.closeErr)
	}
	return l.closeErr
}

// OnClose registers fn to run at the start of Close, before the lab's
// processes are stopped and its namespaces deleted: cleanup of what a lab
// user started by other means than Host.Start.
func (l *Lab) OnClose(fn func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onClose = append(l.onClose, fn)
}

func (l *Lab) runOnClose() error {
	l.mu.Lock()
	fns := l.onClose
	l.mu.Unlock()
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		errs = append(errs, fns[i]())
	}
	return errors.Join(errs...)
}

func (l *Lab) stopAll() error {
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			_, errs[i] = p.halt(context.Background())
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deleteNamespaces deletes the hosts' namespaces, concurrently, and then the
// switch's. Namespaces that were never created are skipped.
func (l *Lab) deleteNamespaces() error {
	l.mu.Lock()
	names := l.namespaces
	l.mu.Unlock()
	var hostNames []string
	for _, n := range names {
		if n != l.switchNS {
			hostNames = append(hostNames, n)
		}
	}
	err := forEach(len(hostNames), func(i int) error {
		return deleteNamespace(hostNames[i])
	})
	if !slices.Contains(names, l.switchNS) {
		return err
	}
	return errors.Join(err, deleteNamespace(l.switchNS))
}

func deleteNamespace(name string) error {
	if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return runIP(context.Background(), "netns", "delete", name)
}

func netnsPath(name string) string { return "/run/netns/" + name }

// forEach calls f(0..n-1) with bounded concurrency and joins the errors.
func forEach(n int, f func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, parallelism)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
