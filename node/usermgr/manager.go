package usermgr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
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
	// HomeFs opens a user's home directory (a path in Fs) as a file system
	// of its own, where ~/.ssh is written. Default: Fs below the home
	// (afero.NewBasePathFs). On a real machine, OpenHomeFs, which no
	// symlink can lead out of.
	HomeFs func(home string) (afero.Fs, error)
	Logger *slog.Logger

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
// does. With no keys and no file, there is nothing to write. The writes go
// through the home directory's own file system (HomeFs), which a symlink
// the user planted cannot lead out of.
func (m *LinuxUserManager) writeKeys(acct account, keys []string) error {
	content := fmt.Sprintf(keysHeader, acct.name)
	if len(keys) > 0 {
		content += strings.Join(keys, "\n") + "\n"
	}
	homeInfo, err := lstat(m.Fs, acct.home)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(keys) == 0:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := mkdirOwned(m.Fs, acct, acct.home, acct.home); err != nil {
			return err
		}
	case err != nil:
		return err
	case !homeInfo.IsDir():
		return fmt.Errorf("home %s is not a directory (a symlink?): not writing keys there", acct.home)
	}
	hfs, err := m.homeFs(acct.home)
	if err != nil {
		return fmt.Errorf("opening home %s: %w", acct.home, err)
	}
	if c, ok := hfs.(io.Closer); ok {
		defer c.Close()
	}
	w := keysWriter{fs: hfs, acct: acct, home: acct.home}
	written, err := w.write(content, len(keys) > 0)
	if err == nil && written {
		m.log().Info("wrote authorized keys", "user", acct.name, "keys", len(keys), "file", path.Join(acct.home, sshDir, keysFile))
	}
	return err
}

// Paths below a home directory.
const (
	sshDir   = ".ssh"
	keysFile = "authorized_keys"
)

func (m *LinuxUserManager) homeFs(home string) (afero.Fs, error) {
	if m.HomeFs != nil {
		return m.HomeFs(home)
	}
	return afero.NewBasePathFs(m.Fs, home), nil
}

// keysWriter writes one user's keys in the file system of its home.
type keysWriter struct {
	fs   afero.Fs
	acct account
	home string // for messages
}

func (w keysWriter) where(name string) string { return path.Join(w.home, name) }

// write makes .ssh/authorized_keys hold content and reports whether it
// wrote. With create false (no keys), a missing .ssh or file is left so.
func (w keysWriter) write(content string, create bool) (bool, error) {
	dir, file := sshDir, path.Join(sshDir, keysFile)
	dirInfo, err := lstat(w.fs, dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !create:
		return false, nil
	case errors.Is(err, fs.ErrNotExist):
		if err := mkdirOwned(w.fs, w.acct, dir, w.where(dir)); err != nil {
			return false, err
		}
	case err != nil:
		return false, fmt.Errorf("%s: %w", w.where(dir), err)
	case !dirInfo.IsDir():
		return false, fmt.Errorf("%s is not a directory (a symlink?): not writing keys there", w.where(dir))
	default:
		if err := w.fixDir(dir, dirInfo); err != nil {
			return false, err
		}
	}
	fileInfo, err := lstat(w.fs, file)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !create:
		return false, nil
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("%s: %w", w.where(file), err)
	case !fileInfo.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file (a symlink?): not writing keys there", w.where(file))
	case w.upToDate(file, fileInfo, content):
		return false, nil
	}
	return true, w.replace(dir, file, content)
}

func lstat(fsys afero.Fs, name string) (fs.FileInfo, error) {
	if l, ok := fsys.(afero.Lstater); ok {
		fi, _, err := l.LstatIfPossible(name)
		return fi, err
	}
	return fsys.Stat(name)
}

// mkdirOwned makes the directory dir (where, in messages), 0700 and owned
// by the user.
func mkdirOwned(fsys afero.Fs, acct account, dir, where string) error {
	if err := fsys.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", where, err)
	}
	if err := fsys.Chmod(dir, 0o700); err != nil { // not narrowed by the umask
		return fmt.Errorf("setting the mode of %s: %w", where, err)
	}
	if err := fsys.Chown(dir, acct.uid, acct.gid); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", where, err)
	}
	return nil
}

// fixDir gives an existing ~/.ssh mode 0700 and the user as owner.
func (w keysWriter) fixDir(dir string, fi fs.FileInfo) error {
	if fi.Mode().Perm() != 0o700 {
		if err := w.fs.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", w.where(dir), err)
		}
	}
	if uid, gid, ok := owner(fi); ok && (uid != w.acct.uid || gid != w.acct.gid) {
		if err := w.fs.Chown(dir, w.acct.uid, w.acct.gid); err != nil {
			return fmt.Errorf("setting the owner of %s: %w", w.where(dir), err)
		}
	}
	return nil
}

// upToDate reports whether file holds content with mode 0600 and the
// user as owner (as far as the file system tells owners).
func (w keysWriter) upToDate(file string, fi fs.FileInfo, content string) bool {
	if fi.Mode().Perm() != 0o600 {
		return false
	}
	if uid, gid, ok := owner(fi); ok && (uid != w.acct.uid || gid != w.acct.gid) {
		return false
	}
	data, err := afero.ReadFile(w.fs, file)
	return err == nil && string(data) == content
}

// fileOwner is what an *os.File offers to set its mode and owner through
// its descriptor, with no path to swap in between.
type fileOwner interface {
	Chmod(fs.FileMode) error
	Chown(uid, gid int) error
}

// replace writes content to a new temporary file in dir, 0600, owned by
// the user and synced, renames it over file and syncs dir.
func (w keysWriter) replace(dir, file, content string) (err error) {
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	tmp := path.Join(dir, ".authorized_keys.fabric-"+hex.EncodeToString(nonce[:]))
	f, err := w.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", w.where(file), err)
	}
	defer func() {
		if err != nil {
			_ = w.fs.Remove(tmp)
		}
	}()
	if err := w.fill(f, tmp, content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", w.where(tmp), err)
	}
	if _, ok := f.(fileOwner); !ok { // a file system without descriptors
		if err := w.fs.Chmod(tmp, 0o600); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", w.where(tmp), err)
		}
		if err := w.fs.Chown(tmp, w.acct.uid, w.acct.gid); err != nil {
			return fmt.Errorf("setting the owner of %s: %w", w.where(tmp), err)
		}
	}
	if err := w.fs.Rename(tmp, file); err != nil {
		return fmt.Errorf("replacing %s: %w", w.where(file), err)
	}
	return syncDir(w.fs, dir)
}

// fill writes content to the new file f, sets its mode and owner through
// its descriptor when it has one, and syncs it.
func (w keysWriter) fill(f afero.File, tmp, content string) error {
	if _, err := f.WriteString(content); err != nil {
		return fmt.Errorf("writing %s: %w", w.where(tmp), err)
	}
	if fo, ok := f.(fileOwner); ok {
		if err := fo.Chmod(0o600); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", w.where(tmp), err)
		}
		if err := fo.Chown(w.acct.uid, w.acct.gid); err != nil {
			return fmt.Errorf("setting the owner of %s: %w", w.where(tmp), err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", w.where(tmp), err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(fsys afero.Fs, dir string) error {
	d, err := fsys.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
