package registry

import (
	"errors"
	"fmt"
	"slices"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/store"
)

// sshUsers is the cluster's SSH users as the registry caches them: sorted
// by name, with the revision of their last change.
type sshUsers struct {
	users    []records.SSHUser
	revision uint64
}

func scanSSHUsers(tx store.Tx, into *sshUsers) error {
	err := store.GetJSON(tx, keySSHUsersRevision, &into.revision)
	if errors.Is(err, store.ErrNotFound) {
		return nil // a registry from before SSH users: none
	}
	if err != nil {
		return err
	}
	return tx.Scan(prefixSSHUsers, func(key string, value []byte) error {
		var u records.SSHUser
		if err := store.DecodeJSON(key, value, &u); err != nil {
			return err
		}
		into.users = append(into.users, u)
		return nil
	})
}

// putSSHUsers replaces the SSH users old with next (sorted by name): it
// writes the users that are new or changed, stamped with the transaction's
// revision, deletes those that are gone and records the revision as the
// users' last change.
func (m *mutation) putSSHUsers(next, old []records.SSHUser) error {
	byName := map[string]records.SSHUser{}
	for _, u := range old {
		byName[u.Name] = u
	}
	var stamped []records.SSHUser
	for _, u := range next {
		prev, had := byName[u.Name]
		delete(byName, u.Name)
		if had && slices.Equal(prev.Keys, u.Keys) {
			stamped = append(stamped, prev)
			continue
		}
		u.Keys, u.Revision = slices.Clone(u.Keys), m.rev
		if err := store.PutJSON(m.tx, prefixSSHUsers+u.Name, u); err != nil {
			return err
		}
		stamped = append(stamped, u)
	}
	for name := range byName {
		if err := m.tx.Delete(prefixSSHUsers + name); err != nil {
			return err
		}
	}
	if err := store.PutJSON(m.tx, keySSHUsersRevision, m.rev); err != nil {
		return err
	}
	m.sshUsers = &sshUsers{users: stamped, revision: m.rev}
	return nil
}

// SSHUsers returns the revision of the SSH users' last change and the
// users, sorted by name.
func (r *Registry) SSHUsers() (uint64, []records.SSHUser) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sshUsers.revision, slices.Clone(r.sshUsers.users)
}

// SSHUsersSince returns the SSH users and true when they changed after
// since, or when since is 0 or newer than the registry (the caller's state
// is unknown).
func (r *Registry) SSHUsersSince(since uint64) ([]records.SSHUser, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if since != 0 && since <= r.revision && r.sshUsers.revision <= since {
		return nil, false
	}
	return slices.Clone(r.sshUsers.users), true
}

// errUnchanged stops an update that would change nothing.
var errUnchanged = errors.New("unchanged")

// UpdateSSHUsers replaces the SSH users with fn's result in one transaction
// that bumps the revision. fn gets the current users (sorted by name) and
// returns the new ones, sorted by name and checked, or an error that
// changes nothing. When fn returns the same users, nothing is written and
// changed is false. It returns the revision of the users' last change and
// the users.
func (r *Registry) UpdateSSHUsers(fn func([]records.SSHUser) ([]records.SSHUser, error)) (changed bool, rev uint64, users []records.SSHUser, err error) {
	var result sshUsers
	var fnErr error
	err = r.update(func(m *mutation) error {
		if m.cluster == nil {
			return ErrNotInitialized
		}
		// Under the writer lock, the cache is the committed state.
		curRev, cur := r.SSHUsers()
		next, err := fn(cur)
		if err != nil {
			fnErr = err
			return err
		}
		if sshusers.Equal(cur, next) {
			result = sshUsers{users: cur, revision: curRev}
			return errUnchanged
		}
		if err := m.putSSHUsers(next, cur); err != nil {
			return err
		}
		result = *m.sshUsers
		return nil
	})
	if fnErr != nil {
		return false, 0, nil, fnErr // fn's own error, as it is
	}
	if err != nil && !errors.Is(err, errUnchanged) {
		return false, 0, nil, fmt.Errorf("updating ssh users: %w", err)
	}
	return err == nil, result.revision, slices.Clone(result.users), nil
}
