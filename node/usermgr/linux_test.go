package usermgr_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/node/usermgr"
	"github.com/fabricmesh/fabric/node/usermgr/usermgrtest"
	"github.com/spf13/afero"
)

// newRoot makes a throwaway root directory with the account files of a
// fresh machine (root only), for useradd --root. The machine's own
// /etc/passwd is never touched.
func newRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: useradd --root chroots into the test's directory (run the tests as root; CI does)")
	}
	for _, tool := range []string{"useradd", "usermod", "groupadd"} {
		if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
			t.Skipf("needs /usr/sbin/%s (Debian package passwd): %v", tool, err)
		}
	}
	dir := t.TempDir()
	if err := usermgrtest.SeedRoot(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// countingRun runs the real commands and records their names.
type countingRun struct {
	mu    sync.Mutex
	tools []string
}

func (c *countingRun) run(ctx context.Context, name string, args ...string) error {
	c.mu.Lock()
	c.tools = append(c.tools, filepath.Base(name))
	c.mu.Unlock()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (c *countingRun) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.tools
	c.tools = nil
	return out
}

func fileLine(t *testing.T, root, file, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, name+":") {
			return l
		}
	}
	return ""
}

// TestLinuxUserManager runs the real manager with the real shadow tools on
// a throwaway root: create, idempotent re-apply, lock, unlock.
func TestLinuxUserManager(t *testing.T) {
	root := newRoot(t)
	runs := &countingRun{}
	m := &usermgr.LinuxUserManager{
		Fs: afero.NewBasePathFs(afero.NewOsFs(), root), Creator: &usermgr.LinuxUserCreator{Root: root, Run: runs.run},
		HomeFs: func(home string) (afero.Fs, error) { return usermgr.OpenHomeFs(filepath.Join(root, home)) },
	}
	ctx := context.Background()
	alice := records.SSHUser{Name: "alice", Keys: []string{sshuserstest.Key(1, "alice@laptop")}}
	bob := records.SSHUser{Name: "bob", Keys: []string{sshuserstest.Key(2, "bob@work"), sshuserstest.RSA2048}}

	if err := m.ApplyUsers(ctx, []records.SSHUser{alice, bob}); err != nil {
		t.Fatalf("ApplyUsers: %v", err)
	}
	if got, want := runs.take(), []string{"groupadd", "useradd", "useradd"}; !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	pw := strings.Split(fileLine(t, root, "etc/passwd", "bob"), ":")
	if len(pw) != 7 || pw[5] != "/home/bob" || pw[6] != usermgr.Shell {
		t.Fatalf("passwd line of bob = %q", pw)
	}
	if g := fileLine(t, root, "etc/group", "fabric-users"); !strings.HasSuffix(g, ":alice,bob") {
		t.Errorf("group line = %q, want members alice,bob", g)
	}
	keysFile := filepath.Join(root, "home/bob/.ssh/authorized_keys")
	data, err := os.ReadFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := "# Written by fabric: the cluster's SSH user bob (fabric users list). Changes here are overwritten.\n" +
		bob.Keys[0] + "\n" + bob.Keys[1] + "\n"; string(data) != want {
		t.Errorf("%s = %q, want %q", keysFile, data, want)
	}
	for p, mode := range map[string]os.FileMode{filepath.Dir(keysFile): 0o700, keysFile: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != mode || pw[2] != itoa(st.Uid) || pw[3] != itoa(st.Gid) {
			t.Errorf("%s: mode %v owner %d:%d, want %v %s:%s", p, fi.Mode().Perm(), st.Uid, st.Gid, mode, pw[2], pw[3])
		}
	}
	before, _ := os.Stat(keysFile)

	// Again: nothing runs, nothing is written.
	if err := m.ApplyUsers(ctx, []records.SSHUser{alice, bob}); err != nil {
		t.Fatalf("ApplyUsers again: %v", err)
	}
	if got := runs.take(); len(got) != 0 {
		t.Errorf("applying the same users again ran %q", got)
	}
	if after, _ := os.Stat(keysFile); !after.ModTime().Equal(before.ModTime()) {
		t.Error("applying the same users again rewrote the keys file")
	}

	// bob removed: locked, keys emptied, files kept.
	if err := m.ApplyUsers(ctx, []records.SSHUser{alice}); err != nil {
		t.Fatalf("ApplyUsers without bob: %v", err)
	}
	if got := runs.take(); !slices.Equal(got, []string{"usermod"}) {
		t.Errorf("removing bob ran %q, want usermod", got)
	}
	if pw := strings.Split(fileLine(t, root, "etc/passwd", "bob"), ":"); pw[6] != usermgr.NoLoginShell {
		t.Errorf("shell of a removed user = %q", pw[6])
	}
	if sh := strings.Split(fileLine(t, root, "etc/shadow", "bob"), ":"); !strings.HasPrefix(sh[1], "!") || sh[7] != "1" {
		t.Errorf("shadow line of a removed user = %q, want a locked password and expiry day 1", sh)
	}
	if data, _ := os.ReadFile(keysFile); strings.Contains(string(data), "ssh-") {
		t.Errorf("keys of a removed user = %q", data)
	}

	// bob back: unlocked.
	if err := m.ApplyUsers(ctx, []records.SSHUser{alice, bob}); err != nil {
		t.Fatalf("ApplyUsers with bob back: %v", err)
	}
	if got := runs.take(); !slices.Equal(got, []string{"usermod"}) {
		t.Errorf("adding bob back ran %q, want usermod", got)
	}
	if pw := strings.Split(fileLine(t, root, "etc/passwd", "bob"), ":"); pw[6] != usermgr.Shell {
		t.Errorf("shell of a user added back = %q", pw[6])
	}
	if sh := strings.Split(fileLine(t, root, "etc/shadow", "bob"), ":"); sh[7] != "" {
		t.Errorf("shadow line of a user added back = %q, want no expiry", sh)
	}
	if data, _ := os.ReadFile(keysFile); !strings.Contains(string(data), bob.Keys[1]) {
		t.Errorf("keys of a user added back = %q", data)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// swapFs plants a symlink in place of ~/.ssh just before the manager
// creates its temporary file: the race a user could run against the
// manager's checks.
type swapFs struct {
	afero.Fs
	swap func()
}

func (s swapFs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if flag&os.O_CREATE != 0 {
		s.swap()
	}
	return s.Fs.OpenFile(name, flag, perm)
}

// TestHomeFsStopsTheSymlinkRace: with OpenHomeFs, a ~/.ssh swapped for a
// symlink out of the home after the manager looked leads nowhere.
func TestHomeFsStopsTheSymlinkRace(t *testing.T) {
	root := newRoot(t)
	outside := filepath.Join(root, "root", ".ssh") // as if /root/.ssh
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	var home string
	m := &usermgr.LinuxUserManager{
		Fs: afero.NewBasePathFs(afero.NewOsFs(), root), Creator: &usermgr.LinuxUserCreator{Root: root},
		HomeFs: func(h string) (afero.Fs, error) {
			home = filepath.Join(root, h)
			fs, err := usermgr.OpenHomeFs(home)
			return swapFs{Fs: fs, swap: func() {
				dir := filepath.Join(home, ".ssh")
				if err := os.RemoveAll(dir); err != nil {
					t.Error(err)
				}
				if err := os.Symlink(outside, dir); err != nil {
					t.Error(err)
				}
			}}, err
		},
	}
	err := m.ApplyUsers(context.Background(), []records.SSHUser{{Name: "alice", Keys: []string{sshuserstest.Key(1, "")}}})
	if err == nil || !strings.Contains(err.Error(), "path escapes from parent") {
		t.Fatalf("ApplyUsers through a swapped ~/.ssh = %v, want the escape refused", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("the symlink's target got %d entries", len(entries))
	}
}
