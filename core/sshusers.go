package core

import (
	"context"
	"errors"
	"fmt"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/update"
)

// ErrNotFound: the request names something that does not exist (an SSH
// user or key, a node); nothing changed.
var ErrNotFound = sshusers.ErrNotFound

// UserApplier installs the cluster's SSH users on this peer (the user
// manager, node/usermgr). It gets the whole set each time; applying the
// same set again changes nothing. It persists what it does itself; core
// persists the revision only once the users are applied.
type UserApplier interface {
	ApplyUsers(ctx context.Context, users []records.SSHUser) error
}

// SSHUserChange is the outcome of adding or removing an SSH user or keys.
type SSHUserChange struct {
	// Changed is false when the users already were as asked.
	Changed bool
	// Revision is the cluster revision of the users' last change.
	Revision uint64
	// User is the user as it is now; nil when it was removed.
	User *records.SSHUser
	// Keys are the keys added or removed.
	Keys []sshusers.Key
}

// SSHUsers returns the coordinator's SSH users and the revision of their
// last change.
func (c *Core) SSHUsers() (uint64, []records.SSHUser, error) {
	reg, err := c.coordinatorRegistry()
	if err != nil {
		return 0, nil, err
	}
	rev, users := reg.SSHUsers()
	return rev, users, nil
}

// AddSSHUser adds the user name with keys, or adds to an existing user the
// keys it lacks, in one revision that every peer applies.
func (c *Core) AddSSHUser(name string, keys []string) (SSHUserChange, error) {
	return c.changeSSHUsers(name, func(users []records.SSHUser) ([]records.SSHUser, []sshusers.Key, error) {
		return sshusers.Add(users, name, keys)
	})
}

// RemoveSSHUser removes the user name or, with keys (fingerprints or key
// lines), only those keys. Peers lock a removed user: they do not delete it.
func (c *Core) RemoveSSHUser(name string, keys []string) (SSHUserChange, error) {
	return c.changeSSHUsers(name, func(users []records.SSHUser) ([]records.SSHUser, []sshusers.Key, error) {
		return sshusers.Remove(users, name, keys)
	})
}

func (c *Core) changeSSHUsers(name string, change func([]records.SSHUser) ([]records.SSHUser, []sshusers.Key, error)) (SSHUserChange, error) {
	reg, err := c.coordinatorRegistry()
	if err != nil {
		return SSHUserChange{}, err
	}
	var keys []sshusers.Key
	var refused error // the change's own error: the request is invalid
	changed, rev, users, err := reg.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) {
		next, k, err := change(cur)
		keys, refused = k, err
		return next, err
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, records.ErrNotInitialized):
		return SSHUserChange{}, err
	case err != nil && refused != nil:
		return SSHUserChange{}, invalidArgument{err}
	case err != nil:
		// The store could not commit (a full disk, say): not the
		// request's fault.
		return SSHUserChange{}, fmt.Errorf("recording the change of SSH user %s: %w", name, err)
	}
	out := SSHUserChange{Changed: changed, Revision: rev, Keys: keys}
	for _, u := range users {
		if u.Name == name {
			out.User = &u
		}
	}
	return out, nil
}

// invalidArgument is ErrInvalidArgument with err's message alone (the
// message says what is wrong; the API layer says it was the request).
type invalidArgument struct{ err error }

func (e invalidArgument) Error() string   { return e.err.Error() }
func (e invalidArgument) Unwrap() []error { return []error{ErrInvalidArgument, e.err} }

// coordinatorRegistry returns the registry of an active coordinator.
func (c *Core) coordinatorRegistry() (Registry, error) {
	reg, ok := c.Registry()
	if !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, c.wrongStateLocked()
	}
	return reg, nil
}

// applyUsers applies the SSH users an update carries, if any.
func (c *Core) applyUsers(ctx context.Context, u update.Update) error {
	if !u.HasSSHUsers || c.cfg.Users == nil {
		return nil
	}
	if err := c.cfg.Users.ApplyUsers(ctx, u.SSHUsers); err != nil {
		return fmt.Errorf("applying the SSH users of revision %d: %w", u.Revision, err)
	}
	return nil
}
