package registry

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// The marks of a migration (fabricd migrate-store), outside the state:
//
//	registry/moved      in the store copied from: where its records went
//	registry/migration  in the store copied to: the copy, done or not
const (
	keyMoved     = "registry/moved"
	keyMigration = "registry/migration"
)

// Moved is the mark Migrate leaves in the store it copied from: its
// records are no longer the cluster's.
type Moved struct {
	To      string    `json:"to"`      // the store's address
	StoreID string    `json:"storeID"` // the store's ID
	At      time.Time `json:"at"`
}

// Migration is the mark Migrate keeps in the store it copies to.
type Migration struct {
	From    string    `json:"from"`
	Started time.Time `json:"started"`
	// Done is set in the transaction that writes the cluster's record,
	// the last one of the copy.
	Done bool `json:"done"`
	Keys int  `json:"keys,omitempty"`
}

// Errors of Open and CheckMoved on a migrated or half-copied store.
var (
	// ErrMoved: the store's records were copied to another store, which
	// holds the cluster now.
	ErrMoved = errors.New("the cluster's records were moved to another store")
	// ErrUnfinishedCopy: the store holds a copy Migrate did not finish.
	ErrUnfinishedCopy = errors.New("the store holds an unfinished copy of a cluster's records")
)

// MigrateTarget names the store Migrate copies to, for the marks.
type MigrateTarget struct {
	Address, StoreID string
}

// MigrateResult says what Migrate copied.
type MigrateResult struct {
	ClusterID string
	Revision  uint64
	Peers     int
	Keys      int
}

// Copy batches: at most this many keys and bytes per transaction, within
// etcd's default limits (128 operations, 1.5 MiB).
const (
	migrateBatchKeys  = 100
	migrateBatchBytes = 1 << 20
)

// Migrate copies a cluster's records from one store to another that holds
// nothing (or only an unfinished copy of an earlier Migrate, which it
// deletes first), checks the copy key by key, and marks from as moved:
// Open of from then fails with ErrMoved. Nothing must run on either store
// meanwhile. The copy is made in batches; the cluster's record, which
// makes a registry of the store, is written last, with the mark that the
// copy is done, so a copy cut short is never taken for a cluster (Open
// fails with ErrUnfinishedCopy) and Migrate run again starts it over.
func Migrate(from, to store.Store, fromName string, target MigrateTarget) (MigrateResult, error) {
	src, res, err := readForMigration(from)
	if err != nil {
		return MigrateResult{}, err
	}
	if err := clearUnfinishedCopy(to); err != nil {
		return MigrateResult{}, err
	}
	mark := Migration{From: fromName, Started: time.Now().UTC(), Keys: len(src)}
	keys := make([]string, 0, len(src))
	for k := range src {
		if k != keyCluster {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = append(keys, keyCluster) // last
	for first := 0; first < len(keys); {
		n, size := 0, 0
		for first+n < len(keys) && n < migrateBatchKeys && (n == 0 || size+len(src[keys[first+n]]) <= migrateBatchBytes) {
			size += len(src[keys[first+n]])
			n++
		}
		batch, last := keys[first:first+n], first+n == len(keys)
		if err := to.Update(func(tx store.Tx) error {
			return writeMigrationBatch(tx, src, batch, mark, first == 0, last)
		}); err != nil {
			return MigrateResult{}, fmt.Errorf("copying the cluster's records to %s: %w", target.Address, err)
		}
		first += n
	}
	if err := verifyMigration(to, src); err != nil {
		return MigrateResult{}, err
	}
	if err := from.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, keyMoved, Moved{To: target.Address, StoreID: target.StoreID, At: time.Now().UTC()})
	}); err != nil {
		return MigrateResult{}, fmt.Errorf("the copy is complete and verified, but marking %s as moved failed: %w", fromName, err)
	}
	res.Keys = len(src)
	return res, nil
}

// readForMigration reads the records of the cluster in st: every key
// under registry/ but the coordinators' beats (rewritten every few
// seconds by running coordinators) and the marks.
func readForMigration(st store.Store) (map[string][]byte, MigrateResult, error) {
	src := map[string][]byte{}
	var moved *Moved
	err := st.View(func(tx store.Tx) error {
		return tx.Scan("registry/", func(key string, value []byte) error {
			switch {
			case key == keyMoved:
				moved = &Moved{}
				return store.DecodeJSON(key, value, moved)
			case key == keyMigration, strings.HasPrefix(key, prefixBeats):
				return nil
			}
			src[key] = bytes.Clone(value)
			return nil
		})
	})
	if err != nil {
		return nil, MigrateResult{}, fmt.Errorf("reading the cluster's records: %w", err)
	}
	if moved != nil {
		return nil, MigrateResult{}, movedError(*moved)
	}
	if _, ok := src[keyCluster]; !ok {
		return nil, MigrateResult{}, errors.New("the store holds no cluster's records (it is not an activated coordinator's)")
	}
	s := newState()
	for k, v := range src {
		if strings.HasPrefix(k, prefixLog) {
			continue
		}
		if err := s.load(k, v, false); err != nil {
			return nil, MigrateResult{}, fmt.Errorf("the cluster's records do not load: %w", err)
		}
	}
	if err := store.DecodeJSON(keyRevision, src[keyRevision], &s.rev); err != nil {
		return nil, MigrateResult{}, err
	}
	return src, MigrateResult{ClusterID: s.cluster.ID, Revision: s.rev, Peers: len(s.peers)}, nil
}

// clearUnfinishedCopy refuses a store that holds anything but an
// unfinished copy of Migrate, and deletes such a copy.
func clearUnfinishedCopy(st store.Store) error {
	var keys []string
	var mark *Migration
	err := st.View(func(tx store.Tx) error {
		return tx.Scan("", func(key string, value []byte) error {
			keys = append(keys, key)
			if key == keyMigration {
				mark = &Migration{}
				return store.DecodeJSON(key, value, mark)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("reading the store to copy to: %w", err)
	}
	switch {
	case len(keys) == 0:
		return nil
	case mark == nil || mark.Done:
		return fmt.Errorf("the store to copy to is not empty: it holds %d keys (the first: %q); copy into an empty one (another prefix: etcd://HOST:PORT/fabric/NAME)", len(keys), keys[0])
	}
	for len(keys) > 0 {
		n := min(len(keys), migrateBatchKeys)
		if err := st.Update(func(tx store.Tx) error {
			for _, k := range keys[:n] {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("deleting the unfinished copy from %s: %w", mark.From, err)
		}
		keys = keys[n:]
	}
	return nil
}

// writeMigrationBatch writes one batch of the copy. The first one checks
// that the store is still empty and writes the mark; every other one
// checks that the mark is this copy's (another copy into the same store
// fails); the last one marks the copy done.
func writeMigrationBatch(tx store.Tx, src map[string][]byte, batch []string, mark Migration, first, last bool) error {
	if first {
		if err := tx.Scan("", func(key string, _ []byte) error {
			return fmt.Errorf("the store to copy to is no longer empty (%q)", key)
		}); err != nil {
			return err
		}
	} else {
		var cur Migration
		if err := store.GetJSON(tx, keyMigration, &cur); err != nil {
			return fmt.Errorf("the copy's mark: %w", err)
		}
		if !cur.Started.Equal(mark.Started) || cur.From != mark.From {
			return fmt.Errorf("another copy (from %s, started %s) writes to the same store", cur.From, cur.Started)
		}
	}
	for _, k := range batch {
		if err := tx.Put(k, src[k]); err != nil {
			return err
		}
	}
	if first || last {
		mark.Done = last
		return store.PutJSON(tx, keyMigration, mark)
	}
	return nil
}

// verifyMigration reads the copy back: every key of src with its value,
// and no other but the mark.
func verifyMigration(st store.Store, src map[string][]byte) error {
	got := map[string][]byte{}
	err := st.View(func(tx store.Tx) error {
		return tx.Scan("", func(key string, value []byte) error {
			if key != keyMigration {
				got[key] = bytes.Clone(value)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("reading the copy back: %w", err)
	}
	var errs []error
	for k, v := range src {
		g, ok := got[k]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s is missing", k))
		case !bytes.Equal(g, v):
			errs = append(errs, fmt.Errorf("%s differs", k))
		}
	}
	for k := range got {
		if _, ok := src[k]; !ok {
			errs = append(errs, fmt.Errorf("%s was not copied but is there", k))
		}
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return fmt.Errorf("the copy does not match the records copied (%d of %d keys wrong): %w", len(errs), len(src), errors.Join(errs...))
	}
	return nil
}

func movedError(m Moved) error {
	return fmt.Errorf("%w: to %s (%s) by fabricd migrate-store at %s; start fabricd with --store %s", ErrMoved, m.To, m.StoreID, m.At.Format(time.RFC3339), m.To)
}

// checkMarks refuses, for Open, a store whose records were moved or that
// holds an unfinished copy.
func checkMarks(tx store.Tx) error {
	var moved Moved
	switch err := store.GetJSON(tx, keyMoved, &moved); {
	case err == nil:
		return movedError(moved)
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	var mark Migration
	switch err := store.GetJSON(tx, keyMigration, &mark); {
	case err == nil && !mark.Done:
		return fmt.Errorf("%w (from %s, started %s): run fabricd migrate-store again", ErrUnfinishedCopy, mark.From, mark.Started.Format(time.RFC3339))
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return nil
}

// CheckMoved checks, for a coordinator whose registry is in the shared
// store sharedID, that its own store local holds no cluster's records that
// are not there: none at all, or records Migrate moved to sharedID.
// Otherwise it says how to move them (the coordinator would run as a
// fresh peer while its records stay behind).
func CheckMoved(local store.Store, sharedID string) error {
	return local.View(func(tx store.Tx) error {
		var moved Moved
		err := store.GetJSON(tx, keyMoved, &moved)
		switch {
		case err == nil && moved.StoreID == sharedID:
			return nil
		case err == nil:
			return fmt.Errorf("this peer's own store says the cluster's records were moved to %s (%s), not to the store fabricd runs with (%s): start it with --store %s", moved.To, moved.StoreID, sharedID, moved.To)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		var c records.Cluster
		switch err := store.GetJSON(tx, keyCluster, &c); {
		case errors.Is(err, store.ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		return fmt.Errorf("this peer's own store holds the records of cluster %s, which are not in the store fabricd runs with (%s): stop fabricd and copy them with fabricd migrate-store --from bolt:<state-dir>/fabric.db --to <the store>, or start it without --store", c.ID, sharedID)
	})
}
