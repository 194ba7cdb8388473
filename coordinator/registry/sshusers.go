package registry

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers"
)

// The SSH users, one record per user, and the revision of their last
// change (a removal leaves no record, so it is kept apart).
const (
	prefixSSHUsers      = "registry/sshusers/"
	keySSHUsersRevision = "registry/sshusers-revision"
)

// setSSHUsers buffers next (sorted by name) as the SSH users: users that
// are new or changed are stamped with the change's revision, the others
// keep theirs.
func (m *mutation) setSSHUsers(next []records.SSHUser) {
	byName := map[string]records.SSHUser{}
	for _, u := range m.s.users {
		byName[u.Name] = u
	}
	var stamped []records.SSHUser
	for _, u := range next {
		if prev, had := byName[u.Name]; had && slices.Equal(prev.Keys, u.Keys) {
			stamped = append(stamped, prev)
			continue
		}
		u.Keys, u.Revision = slices.Clone(u.Keys), m.rev
		stamped = append(stamped, u)
	}
	m.users, m.prevUsers = &stamped, m.s.users
}

// userWrites are the writes of the buffered SSH users: the new or changed
// ones, the deletion of the others, and the revision of their change.
func (m *mutation) userWrites() ([]Write, error) {
	var out []Write
	gone := map[string]bool{}
	for _, u := range m.prevUsers {
		gone[u.Name] = true
	}
	for _, u := range *m.users {
		delete(gone, u.Name)
		if u.Revision == m.rev {
			w, err := put(prefixSSHUsers+u.Name, u)
			if err != nil {
				return nil, err
			}
			out = append(out, w)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(gone)) {
		out = append(out, Write{Key: prefixSSHUsers + name, Deleted: true})
	}
	w, err := put(keySSHUsersRevision, m.rev)
	return append(out, w), err
}

// putUser and deleteUser keep s.users sorted by name.
func (s *state) putUser(u records.SSHUser) {
	i, found := slices.BinarySearchFunc(s.users, u.Name, func(x records.SSHUser, name string) int { return strings.Compare(x.Name, name) })
	if found {
		s.users[i] = u
		return
	}
	s.users = slices.Insert(s.users, i, u)
}

func (s *state) deleteUser(name string) {
	if i, found := slices.BinarySearchFunc(s.users, name, func(x records.SSHUser, name string) int { return strings.Compare(x.Name, name) }); found {
		s.users = slices.Delete(s.users, i, i+1)
	}
}

// SSHUsers returns the revision of the SSH users' last change and the
// users, sorted by name.
func (r *Registry) SSHUsers() (uint64, []records.SSHUser) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.committed.usersRev, slices.Clone(r.committed.users)
}

// UpdateSSHUsers replaces the SSH users with fn's result in one revision.
// fn gets the current users (sorted by name) and returns the new ones,
// sorted by name and checked, or an error that changes nothing. When fn
// returns the same users, nothing is written and changed is false. It
// returns the revision of the users' last change and the users.
func (r *Registry) UpdateSSHUsers(fn func([]records.SSHUser) ([]records.SSHUser, error)) (changed bool, rev uint64, users []records.SSHUser, err error) {
	var fnErr error
	err = r.update(KindUsers, func(m *mutation) error {
		if m.cluster == nil {
			return ErrNotInitialized
		}
		cur := slices.Clone(m.s.users)
		next, err := fn(cur)
		if err != nil {
			fnErr = err
			return err
		}
		if sshusers.Equal(cur, next) {
			rev, users = m.s.usersRev, cur
			return errNoChange
		}
		m.setSSHUsers(next)
		m.detail = sshusers.Describe(m.s.users, next)
		changed, rev, users = true, m.rev, slices.Clone(*m.users)
		return nil
	})
	if fnErr != nil {
		return false, 0, nil, fnErr // fn's own error, as it is
	}
	if err != nil {
		return false, 0, nil, fmt.Errorf("updating ssh users: %w", err)
	}
	return changed, rev, users, nil
}
