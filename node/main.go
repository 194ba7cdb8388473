package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/internal/fabricdconfig"
	"github.com/fabricmesh/fabric/internal/store/etcdstore"
	"github.com/fabricmesh/fabric/internal/version"
	"github.com/spf13/pflag"
)

// Description is what fabricd is, for its help and its man page.
const Description = `fabricd is the fabric appliance daemon; every machine of a cluster runs it.

It reads its settings from /etc/fabric/fabricd.yaml (or --config FILE); a
flag of the same name as a key overrides the file. Only listen has no
default. An unknown key, a value of the wrong type or an invalid value is an
error naming the file, the line and the key; --check-config checks the file
and the flags and exits.

fabricd runs in the foreground and logs to stderr. SIGINT and SIGTERM stop
it. SIGHUP re-reads the config file: the log level applies at once, a change
of any other key is logged and needs a restart; an invalid file is logged and
changes nothing.

fabricd migrate-store copies a coordinator's cluster from its bbolt file to
etcd (fabricd migrate-store --help).`

// Main is fabricd: it parses args (without the program name), runs the
// daemon until ctx ends and returns the exit code: 0 after a clean stop,
// 1 if the daemon failed, 2 for bad flags or config.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "migrate-store" {
		return migrateMain(ctx, args[1:], stdout, stderr)
	}
	inv, err := parseArgs(args, stdout, stderr)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case err != nil:
		printError(stderr, err)
		return 2
	case inv.showVersion:
		fmt.Fprintf(stdout, "fabricd %s\n", version.Get())
		return 0
	}
	level := new(slog.LevelVar)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	settings, err := inv.load()
	var cfg Config
	var etcdOpts *etcdstore.Options
	if err == nil {
		level.Set(settings.LogLevel)
		cfg, err = newConfig(settings, logger) // reads and checks the key file
	}
	if err == nil {
		etcdOpts, err = etcdStoreOptions(settings) // reads and checks the TLS files
	}
	if err == nil {
		err = crashpoint.CheckArmed()
	}
	if err != nil {
		printError(stderr, err)
		return 2
	}
	if inv.checkConfig {
		fmt.Fprintf(stdout, "# %s: valid; the settings fabricd would run with:\n%s", inv.configPath, fabricdconfig.Render(settings, inv.file, inv.fs))
		return 0
	}
	if etcdOpts != nil {
		st, err := openEtcdStore(*etcdOpts, settings.Store, logger)
		if err != nil {
			printError(stderr, err)
			return 1
		}
		defer func() {
			if err := st.Close(); err != nil {
				logger.Warn("closing the etcd store", "err", err)
			}
		}()
		cfg.ClusterStore, cfg.ClusterStoreID = st, st.ID()
	}
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	reloadCtx, stopReloads := context.WithCancel(ctx)
	defer stopReloads()
	go inv.reloadOnHUP(reloadCtx, hups, settings, level, logger)
	if err := Run(ctx, cfg); err != nil {
		printError(stderr, err)
		return 1
	}
	return 0
}

// printError prints each line of err (a join of several) as its own
// "fabricd: " line.
func printError(w io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "fabricd: %s\n", line)
	}
}

// invocation is fabricd's command line.
type invocation struct {
	fs          *pflag.FlagSet
	configPath  string
	configGiven bool
	checkConfig bool
	showVersion bool
	// file is the config file as last read.
	file fabricdconfig.File
}

// Flags returns fabricd's flags (every config key, and the flags that are
// not keys), for its man page.
func Flags() *pflag.FlagSet {
	fs, _ := newFlagSet()
	return fs
}

func newFlagSet() (*pflag.FlagSet, *invocation) {
	fs := pflag.NewFlagSet("fabricd", pflag.ContinueOnError)
	fs.SortFlags = false
	inv := &invocation{fs: fs}
	fs.StringVar(&inv.configPath, "config", fabricdconfig.DefaultPath, "config file; the default one may be missing, one given here must exist")
	fs.BoolVar(&inv.checkConfig, "check-config", false, "check the config file and the flags, print the settings and exit (0 valid, 2 invalid)")
	fs.BoolVar(&inv.showVersion, "version", false, "print the version, the commit and the Go version, and exit")
	fabricdconfig.AddFlags(fs)
	return fs, inv
}

func parseArgs(args []string, stdout, stderr io.Writer) (*invocation, error) {
	fs, inv := newFlagSet()
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "%s\n\nUsage:\n  fabricd [--config FILE] [flags]\n  fabricd migrate-store --from bolt:PATH --to etcd://HOST:PORT[,...][/PREFIX] [flags]\n\nFlags:\n%s", Description, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (fabricd takes only flags, or the command migrate-store)", fs.Arg(0))
	}
	inv.configGiven = fs.Changed("config")
	return inv, nil
}

// load reads the config file and resolves the settings with the flags.
func (inv *invocation) load() (fabricdconfig.Settings, error) {
	file, err := fabricdconfig.ReadFile(inv.configPath, !inv.configGiven)
	if err != nil {
		return fabricdconfig.Settings{}, err
	}
	s, err := fabricdconfig.Resolve(file, inv.fs)
	if err != nil {
		return fabricdconfig.Settings{}, err
	}
	inv.file = file
	return s, nil
}

// newConfig makes the daemon's Config from the settings.
func newConfig(s fabricdconfig.Settings, logger *slog.Logger) (Config, error) {
	key, err := bootstrapkey.ReadFile(s.BootstrapKeyFile)
	if err != nil {
		return Config{}, fmt.Errorf("bootstrap-key-file: %w", err)
	}
	return Config{
		StateDir: s.StateDir, Listen: s.Listen, BootstrapKey: key, Name: s.Name, Horde: s.Horde,
		WGPort: s.WGPort, InterfaceName: s.WGInterface, NoPastiche: s.NoPastiche, SSHUsersRoot: s.SSHUsersRoot, Logger: logger,
	}, nil
}

// etcdStoreOptions returns the options of the etcd store the settings
// name, or nil for the bolt store.
func etcdStoreOptions(s fabricdconfig.Settings) (*etcdstore.Options, error) {
	opts, etcd, err := s.EtcdStore()
	if err != nil || !etcd {
		return nil, err
	}
	return &opts, nil
}

// openEtcdStore connects to the etcd store at address (the store key) that
// holds the cluster's records.
func openEtcdStore(opts etcdstore.Options, address string, logger *slog.Logger) (*etcdstore.Store, error) {
	opts.Logger = logger.With("component", "etcdstore")
	st, err := etcdstore.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", address, err)
	}
	logger.Info("the cluster's records are in etcd", "store", address, "id", st.ID())
	return st, nil
}

// reloadOnHUP re-reads the config file on every signal from hups until ctx
// ends (see reload).
func (inv *invocation) reloadOnHUP(ctx context.Context, hups <-chan os.Signal, running fabricdconfig.Settings, level *slog.LevelVar, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hups:
			running = inv.reload(running, level, log)
		}
	}
}

// reload re-reads the config file (the flags still override it). An
// invalid file is logged and changes nothing. Otherwise the live keys
// (the log level) are applied and every other change is logged as needing
// a restart. It returns the settings now in force.
func (inv *invocation) reload(running fabricdconfig.Settings, level *slog.LevelVar, log *slog.Logger) fabricdconfig.Settings {
	log.Info("SIGHUP: re-reading the config file", "file", inv.configPath)
	next, err := inv.load()
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error("config file invalid; nothing changed", "err", line)
		}
		return running
	}
	changes := fabricdconfig.Changes(running, next)
	for _, c := range changes {
		if !c.Live {
			log.Warn("config key changed; restart fabricd to apply it", "key", c.Key, "running", c.Old, "file", c.New)
			continue
		}
		running = c.Apply(running)
		level.Set(running.LogLevel)
		log.Info("config key applied", "key", c.Key, "old", c.Old, "new", c.New)
	}
	if len(changes) == 0 {
		log.Info("config unchanged")
	}
	return running
}
