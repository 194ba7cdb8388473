package usermgr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/spf13/afero"
)

// The accounts the manager makes and manages.
const (
	// Shell is the login shell of an unlocked user.
	Shell = "/bin/bash"
	// NoLoginShell is the shell of a locked user.
	NoLoginShell = "/usr/sbin/nologin"
	// MinUID and MaxUID bound the UIDs of managed users (Debian's UID_MIN
	// and UID_MAX): a member of the group with another UID is a system
	// account, never touched.
	MinUID, MaxUID = 1000, 59999
)

// keysHeader starts every authorized_keys file the manager writes.
const keysHeader = "# Written by fabric: the cluster's SSH user %s (fabric users list). Changes here are overwritten.\n"

// LinuxUserManager installs the cluster's SSH users on a Linux machine (see
// the package documentation). Fs is the machine's file system (afero.OsFs,
// or rooted where Creator works); Creator changes the account database.
type LinuxUserManager struct {
	Fs      afero.Fs
	Creator UserCreator
	Logger  *slog.Logger

	mu sync.Mutex
}

// ApplyUsers makes the machine's managed users those of users: it creates
// the missing ones, writes every user's keys and locks the managed users
// that are not in the set. A set that does not pass sshusers.Check is
// refused before anything is done. An account that exists but is not
// managed is left alone (logged). Other failures do not stop the other
// users; the error joins them, and applying the set again finishes the
// work.
func (m *LinuxUserManager) ApplyUsers(ctx context.Context, users []records.SSHUser) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := sshusers.Check(users); err != nil {
		return fmt.Errorf("refusing the SSH users: %w", err)
	}
	accts, err := readAccounts(m.Fs, sshusers.ManagedGroup)
	if err != nil {
		return err
	}
	var errs []error
	want := map[string]bool{}
	for _, u := range users {
		want[u.Name] = true
		if err := m.install(ctx, &accts, u); err != nil {
			errs = append(errs, fmt.Errorf("SSH user %s: %w", u.Name, err))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(accts.members)) {
		if want[name] {
			continue
		}
		if a, ok := accts.managed(name); ok {
			if err := m.lock(ctx, a); err != nil {
				errs = append(errs, fmt.Errorf("locking SSH user %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// managed returns the account name if the manager made it.
func (a accounts) managed(name string) (account, bool) {
	acct, ok := a.byName[name]
	if !ok || !a.members[name] || acct.uid < MinUID || acct.uid > MaxUID {
		return account{}, false
	}
	return acct, true
}

// install creates or unlocks the user and writes its keys.
func (m *LinuxUserManager) install(ctx context.Context, accts *accounts, u records.SSHUser) error {
	acct, managed := accts.managed(u.Name)
	if _, exists := accts.byName[u.Name]; exists && !managed {
		m.log().Warn("not managing an account fabric did not make", "user", u.Name,
			"why", "it exists on this machine outside the group "+sshusers.ManagedGroup+" or with a system UID")
		return nil
	}
	if !managed {
		created, err := m.create(ctx, accts, u.Name)
		if err != nil {
			return err
		}
		acct = created
	} else if acct.shell == NoLoginShell {
		if err := m.Creator.UnlockUser(ctx, u.Name, Shell); err != nil {
			return fmt.Errorf("unlocking: %w", err)
		}
		m.log().Info("unlocked SSH user", "user", u.Name)
	}
	return m.writeKeys(acct, u.Keys)
}

// create makes the user (and the managed group if need be) and rereads the
// account database.
func (m *LinuxUserManager) create(ctx context.Context, accts *accounts, name string) (account, error) {
	if !accts.groupExists {
		if err := m.Creator.CreateGroup(ctx, sshusers.ManagedGroup); err != nil {
			return account{}, fmt.Errorf("creating group %s: %w", sshusers.ManagedGroup, err)
		}
	}
	if err := m.Creator.CreateUser(ctx, name, sshusers.ManagedGroup, Shell); err != nil {
		return account{}, fmt.Errorf("creating the user: %w", err)
	}
	reread, err := readAccounts(m.Fs, sshusers.ManagedGroup)
	if err != nil {
		return account{}, err
	}
	*accts = reread
	acct, ok := accts.managed(name)
	if !ok {
		return account{}, fmt.Errorf("the user is not a member of %s with a UID from %d to %d after it was created", sshusers.ManagedGroup, MinUID, MaxUID)
	}
	m.log().Info("created SSH user", "user", name, "uid", acct.uid, "home", acct.home)
	return acct, nil
}

// lock locks a managed user that is not in the set and empties its keys.
func (m *LinuxUserManager) lock(ctx context.Context, acct account) error {
	if acct.shell != NoLoginShell {
		if err := m.Creator.LockUser(ctx, acct.name); err != nil {
			return err
		}
		m.log().Info("locked SSH user", "user", acct.name)
	}
	return m.writeKeys(acct, nil)
}

func (m *LinuxUserManager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// writeKeys makes ~/.ssh/authorized_keys of acct hold keys (with the
// header), owned by the user, 0600 in a 0700 ~/.ssh, unless it already
// does. With no keys and no file, there is nothing to write.
func (m *LinuxUserManager) writeKeys(acct account, keys []string) error {
	dir := path.Join(acct.home, ".ssh")
	file := path.Join(dir, "authorized_keys")
	content := fmt.Sprintf(keysHeader, acct.name)
	if len(keys) > 0 {
		content += strings.Join(keys, "\n") + "\n"
	}
	homeInfo, err := m.lstat(acct.home)
	if errors.Is(err, fs.ErrNotExist) && len(keys) == 0 {
		return nil
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := m.mkdir(acct, acct.home, 0o700); err != nil {
			return err
		}
	case err != nil:
		return err
	case !homeInfo.IsDir():
		return fmt.Errorf("home %s is not a directory (a symlink?): not writing keys there", acct.home)
	}
	dirInfo, err := m.lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(keys) == 0:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := m.mkdir(acct, dir, 0o700); err != nil {
			return err
		}
	case err != nil:
		return err
	case !dirInfo.IsDir():
		return fmt.Errorf("%s is not a directory (a symlink?): not writing keys there", dir)
	default:
		if err := m.fixDir(acct, dir, dirInfo); err != nil {
			return err
		}
	}
	fileInfo, err := m.lstat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if len(keys) == 0 {
			return nil
		}
	case err != nil:
		return err
	case !fileInfo.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (a symlink?): not writing keys there", file)
	default:
		if m.upToDate(acct, file, fileInfo, content) {
			return nil
		}
	}
	if err := m.writeAtomic(acct, dir, file, content); err != nil {
		return err
	}
	m.log().Info("wrote authorized keys", "user", acct.name, "keys", len(keys), "file", file)
	return nil
}

func (m *LinuxUserManager) lstat(name string) (fs.FileInfo, error) {
	if l, ok := m.Fs.(afero.Lstater); ok {
		fi, _, err := l.LstatIfPossible(name)
		return fi, err
	}
	return m.Fs.Stat(name)
}

func (m *LinuxUserManager) mkdir(acct account, dir string, mode fs.FileMode) error {
	if err := m.Fs.Mkdir(dir, mode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := m.Fs.Chmod(dir, mode); err != nil { // not narrowed by the umask
		return fmt.Errorf("setting the mode of %s: %w", dir, err)
	}
	if err := m.Fs.Chown(dir, acct.uid, acct.gid); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", dir, err)
	}
	return nil
}

// fixDir gives an existing ~/.ssh mode 0700 and the user as owner.
func (m *LinuxUserManager) fixDir(acct account, dir string, fi fs.FileInfo) error {
	if fi.Mode().Perm() != 0o700 {
		if err := m.Fs.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", dir, err)
		}
	}
	if uid, gid, ok := owner(fi); ok && (uid != acct.uid || gid != acct.gid) {
		if err := m.Fs.Chown(dir, acct.uid, acct.gid); err != nil {
			return fmt.Errorf("setting the owner of %s: %w", dir, err)
		}
	}
	return nil
}

// upToDate reports whether file holds content with mode 0600 and the
// user as owner (as far as the file system tells owners).
func (m *LinuxUserManager) upToDate(acct account, file string, fi fs.FileInfo, content string) bool {
	if fi.Mode().Perm() != 0o600 {
		return false
	}
	if uid, gid, ok := owner(fi); ok && (uid != acct.uid || gid != acct.gid) {
		return false
	}
	data, err := afero.ReadFile(m.Fs, file)
	return err == nil && string(data) == content
}

// writeAtomic writes content to a temporary file in dir, owned by the user
// and 0600, synced, and renames it over file.
func (m *LinuxUserManager) writeAtomic(acct account, dir, file, content string) (err error) {
	f, err := afero.TempFile(m.Fs, dir, ".authorized_keys.fabric-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = m.Fs.Remove(tmp)
		}
	}()
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := m.Fs.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", tmp, err)
	}
	if err := m.Fs.Chown(tmp, acct.uid, acct.gid); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", tmp, err)
	}
	if err := m.Fs.Rename(tmp, file); err != nil {
		return fmt.Errorf("replacing %s: %w", file, err)
	}
	return m.syncDir(dir)
}

// syncDir makes a rename in dir durable.
func (m *LinuxUserManager) syncDir(dir string) error {
	d, err := m.Fs.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
