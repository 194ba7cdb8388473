package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/fabricdconfig"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/spf13/pflag"
)

// MigrateDescription is what fabricd migrate-store does, for its help and
// the man page.
const MigrateDescription = `fabricd migrate-store copies a cluster's records from a coordinator's bbolt
file to an etcd store, offline, so that the cluster can have several
coordinators (fabric coordinators add).

Stop fabricd on the coordinator first. The etcd store (its prefix) must be
empty. The records are copied in batches, read back and compared key by
key; the bbolt file is then marked moved, and fabricd refuses to run on it
without --store. The peer's own state (its role, its reeve's) stays in the
file. Then start the coordinator with --store and the same address (and
TLS files), and add coordinators.`

// migrateMain is fabricd migrate-store: 0 after a verified copy, 1 if it
// failed, 2 for bad flags.
func migrateMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, m := newMigrateFlags()
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "%s\n\nUsage:\n  fabricd migrate-store --from bolt:PATH --to etcd://HOST:PORT[,HOST:PORT...][/PREFIX] [flags]\n\nFlags:\n%s", MigrateDescription, fs.FlagUsages())
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case err == nil && fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q (migrate-store takes only flags)", fs.Arg(0))
	}
	if err != nil {
		printError(stderr, fmt.Errorf("migrate-store: %w", err))
		return 2
	}
	if err := m.run(ctx, stdout); err != nil {
		var usage usageError
		printError(stderr, fmt.Errorf("migrate-store: %w", err))
		if errors.As(err, &usage) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError is a bad flag value.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

type migration struct {
	from, to                      string
	etcdCACert, etcdCert, etcdKey string
}

func newMigrateFlags() (*pflag.FlagSet, *migration) {
	m := &migration{}
	fs := pflag.NewFlagSet("fabricd migrate-store", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&m.from, "from", "", "the coordinator's bbolt file, bolt:PATH (bolt:/var/lib/fabric/fabric.db)")
	fs.StringVar(&m.to, "to", "", "the etcd store, as fabricd's --store takes it: etcd://HOST:PORT[,HOST:PORT...][/PREFIX], etcds:// for TLS")
	fs.StringVar(&m.etcdCACert, "etcd-cacert", "", "with etcds://: the CA certificate (PEM) of the etcd members (none: the system's roots)")
	fs.StringVar(&m.etcdCert, "etcd-cert", "", "with etcds://: the client certificate (PEM), with --etcd-key")
	fs.StringVar(&m.etcdKey, "etcd-key", "", "with etcds://: the client certificate's key (PEM), mode 0600 or 0400")
	return fs, m
}

// MigrateFlags returns migrate-store's flags, for the man page.
func MigrateFlags() *pflag.FlagSet {
	fs, _ := newMigrateFlags()
	return fs
}

func (m *migration) run(ctx context.Context, stdout io.Writer) error {
	path, ok := strings.CutPrefix(m.from, "bolt:")
	if !ok || path == "" {
		return usageError{fmt.Errorf("--from %q: want bolt:PATH, the coordinator's fabric.db", m.from)}
	}
	if m.to == "" {
		return usageError{errors.New("--to is required: the etcd store, etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")}
	}
	settings := fabricdconfig.Settings{Store: m.to, EtcdCACert: m.etcdCACert, EtcdCert: m.etcdCert, EtcdKey: m.etcdKey}
	opts, etcd, err := settings.EtcdStore()
	if err == nil && !etcd {
		err = fmt.Errorf("%q: want an etcd store, etcd://HOST:PORT[,HOST:PORT...][/PREFIX]", m.to)
	}
	if err != nil {
		return usageError{fmt.Errorf("--to: %w", err)}
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	from, err := boltstore.Open(path, boltstore.Options{})
	if errors.Is(err, boltstore.ErrLocked) {
		return fmt.Errorf("%w: stop fabricd first (migrate-store copies offline)", err)
	}
	if err != nil {
		return err
	}
	defer from.Close()
	to, err := openEtcdStore(opts, m.to, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer to.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	res, err := registry.Migrate(from, to, m.from, registry.MigrateTarget{Address: m.to, StoreID: to.ID()})
	if err != nil {
		return fmt.Errorf("from %s to %s: %w", m.from, m.to, err)
	}
	fmt.Fprintf(stdout, "copied cluster %s (revision %d, %d peers, %d keys) from %s to %s (%s); every key read back and checked; %s is marked moved.\n"+
		"Start this coordinator with --store %s (and the same TLS files), then add coordinators with fabric coordinators add.\n",
		res.ClusterID, res.Revision, res.Peers, res.Keys, m.from, m.to, to.ID(), path, m.to)
	return nil
}
