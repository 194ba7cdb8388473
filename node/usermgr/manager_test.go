package usermgr_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/node/usermgr"
	"github.com/fabricmesh/fabric/node/usermgr/usermgrtest"
	"github.com/google/go-cmp/cmp"
	"github.com/spf13/afero"
)

var (
	keyA1 = sshuserstest.Key(1, "alice@laptop")
	keyA2 = sshuserstest.Key(2, "alice@desktop")
	keyB  = sshuserstest.Key(3, "bob@work")
)

// ownerFs keeps the owners of files itself, as the OS does, and reports
// them in Stat's Sys() like the OS: afero's memory file system forgets
// them. Files nobody chowned belong to root.
type ownerFs struct {
	afero.Fs
	mu     sync.Mutex
	owners map[string][2]int
}

func newOwnerFs(base afero.Fs) *ownerFs { return &ownerFs{Fs: base, owners: map[string][2]int{}} }

func (o *ownerFs) Chown(name string, uid, gid int) error {
	if _, err := o.Fs.Stat(name); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.owners[path.Clean(name)] = [2]int{uid, gid}
	return nil
}

func (o *ownerFs) Rename(oldname, newname string) error {
	if err := o.Fs.Rename(oldname, newname); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.owners[path.Clean(newname)] = o.owners[path.Clean(oldname)]
	delete(o.owners, path.Clean(oldname))
	return nil
}

func (o *ownerFs) Remove(name string) error {
	if err := o.Fs.Remove(name); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.owners, path.Clean(name))
	return nil
}

func (o *ownerFs) owner(name string) [2]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.owners[path.Clean(name)]
}

func (o *ownerFs) Stat(name string) (fs.FileInfo, error) {
	fi, err := o.Fs.Stat(name)
	if err != nil {
		return nil, err
	}
	return ownedInfo{fi, o.owner(name)}, nil
}

func (o *ownerFs) LstatIfPossible(name string) (fs.FileInfo, bool, error) {
	l, ok := o.Fs.(afero.Lstater)
	if !ok {
		fi, err := o.Stat(name)
		return fi, false, err
	}
	fi, used, err := l.LstatIfPossible(name)
	if err != nil {
		return nil, used, err
	}
	return ownedInfo{fi, o.owner(name)}, used, nil
}

func (o *ownerFs) SymlinkIfPossible(oldname, newname string) error {
	return o.Fs.(afero.Linker).SymlinkIfPossible(oldname, newname)
}

type ownedInfo struct {
	fs.FileInfo
	owner [2]int
}

func (i ownedInfo) Sys() any {
	return &syscall.Stat_t{Uid: uint32(i.owner[0]), Gid: uint32(i.owner[1])}
}

// machine is a fake machine: the user manager and its stub on a memory
// file system.
type machine struct {
	fs      *ownerFs
	manager *usermgr.LinuxUserManager
	stub    *usermgrtest.StubUserCreator
}

func newMachine(t *testing.T) *machine {
	t.Helper()
	return newMachineOn(t, afero.NewMemMapFs())
}

func newMachineOn(t *testing.T, base afero.Fs) *machine {
	t.Helper()
	o := newOwnerFs(base)
	m := usermgrtest.NewLinuxUserManagerFake(o)
	return &machine{fs: o, manager: m, stub: m.Creator.(*usermgrtest.StubUserCreator)}
}

// apply applies users and fails the test on error.
func (m *machine) apply(t *testing.T, users ...records.SSHUser) {
	t.Helper()
	if err := m.manager.ApplyUsers(context.Background(), users); err != nil {
		t.Fatalf("ApplyUsers: %v", err)
	}
}

func (m *machine) read(t *testing.T, name string) string {
	t.Helper()
	data, err := afero.ReadFile(m.fs, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// passwdLine returns the /etc/passwd line of name.
func (m *machine) passwdLine(t *testing.T, name string) string {
	t.Helper()
	return lineOf(m.read(t, usermgr.PasswdFile), name)
}

func lineOf(file, name string) string {
	for _, l := range strings.Split(file, "\n") {
		if strings.HasPrefix(l, name+":") {
			return l
		}
	}
	return ""
}

// snapshot is every file and directory of the machine: mode, owner and
// content.
func (m *machine) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := afero.Walk(m.fs, "/", func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		entry := fmt.Sprintf("%v %v", fi.Mode(), m.fs.owner(p))
		if fi.Mode().IsRegular() {
			data, err := afero.ReadFile(m.fs, p)
			if err != nil {
				return err
			}
			entry += " " + string(data)
		}
		out[p] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func header(name string) string {
	return "# Written by fabric: the cluster's SSH user " + name + " (fabric users list). Changes here are overwritten.\n"
}

// checkKeys checks the user's authorized_keys: content, 0600 in a 0700
// .ssh, both owned by uid.
func (m *machine) checkKeys(t *testing.T, name string, uid int, keys ...string) {
	t.Helper()
	dir := "/home/" + name + "/.ssh"
	file := dir + "/authorized_keys"
	want := header(name)
	for _, k := range keys {
		want += k + "\n"
	}
	if diff := cmp.Diff(want, m.read(t, file)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", file, diff)
	}
	for p, mode := range map[string]fs.FileMode{dir: 0o700, file: 0o600} {
		fi, err := m.fs.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
		if got := m.fs.owner(p); got != [2]int{uid, uid} {
			t.Errorf("%s is owned by %v, want %d:%d", p, got, uid, uid)
		}
	}
}

func user(name string, keys ...string) records.SSHUser {
	return records.SSHUser{Name: name, Keys: keys}
}

func TestCreate(t *testing.T) {
	m := newMachine(t)
	m.apply(t, user("alice", keyA1, keyA2), user("bob", keyB))
	wantCalls := []string{
		"groupadd --system fabric-users",
		"useradd --groups fabric-users --shell /bin/bash alice",
		"useradd --groups fabric-users --shell /bin/bash bob",
	}
	if diff := cmp.Diff(wantCalls, m.stub.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if got, want := m.passwdLine(t, "alice"), "alice:x:1000:1000:fabric SSH user:/home/alice:/bin/bash"; got != want {
		t.Errorf("passwd line of alice = %q, want %q", got, want)
	}
	if got, want := lineOf(m.read(t, usermgr.GroupFile), "fabric-users"), "fabric-users:x:999:alice,bob"; got != want {
		t.Errorf("group line = %q, want %q", got, want)
	}
	m.checkKeys(t, "alice", 1000, keyA1, keyA2)
	m.checkKeys(t, "bob", 1001, keyB)
	// No temporary file is left behind.
	entries, err := afero.ReadDir(m.fs, "/home/alice/.ssh")
	if err != nil || len(entries) != 1 {
		t.Errorf("/home/alice/.ssh holds %d entries (%v), want only authorized_keys", len(entries), err)
	}
}

// TestIdempotent: the same set again writes nothing and runs nothing: the
// second apply runs on a read-only view of the same machine.
func TestIdempotent(t *testing.T) {
	m := newMachine(t)
	users := []records.SSHUser{user("alice", keyA1, keyA2), user("bob", keyB)}
	m.apply(t, users...)
	before := m.snapshot(t)
	ro := &usermgr.LinuxUserManager{Fs: afero.NewReadOnlyFs(m.fs), Creator: &usermgrtest.StubUserCreator{Fs: afero.NewReadOnlyFs(m.fs)}}
	for range 2 {
		if err := ro.ApplyUsers(context.Background(), users); err != nil {
			t.Fatalf("applying the same users again: %v", err)
		}
	}
	if calls := ro.Creator.(*usermgrtest.StubUserCreator).Calls(); len(calls) != 0 {
		t.Errorf("applying the same users again ran %q", calls)
	}
	m.apply(t, users...)
	if diff := cmp.Diff(before, m.snapshot(t)); diff != "" {
		t.Errorf("applying the same users again changed the machine (-before +after):\n%s", diff)
	}
	m.checkKeys(t, "alice", 1000, keyA1, keyA2) // each key once
}

func TestKeyChanges(t *testing.T) {
	m := newMachine(t)
	m.apply(t, user("alice", keyA1, keyA2))
	m.apply(t, user("alice", keyA2))
	m.checkKeys(t, "alice", 1000, keyA2)
	m.apply(t, user("alice", keyB, keyA2))
	m.checkKeys(t, "alice", 1000, keyB, keyA2)
	if got := len(m.stub.Calls()); got != 2 {
		t.Errorf("changing keys ran %q; want only the first groupadd and useradd", m.stub.Calls())
	}
}

// TestRepairs: a keys file or .ssh with the wrong mode or owner, or a keys
// file edited by hand, is put right.
func TestRepairs(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(fs afero.Fs) error
	}{
		{"file mode", func(fs afero.Fs) error { return fs.Chmod("/home/alice/.ssh/authorized_keys", 0o644) }},
		{"dir mode", func(fs afero.Fs) error { return fs.Chmod("/home/alice/.ssh", 0o755) }},
		{"file owner", func(fs afero.Fs) error { return fs.Chown("/home/alice/.ssh/authorized_keys", 0, 0) }},
		{"dir owner", func(fs afero.Fs) error { return fs.Chown("/home/alice/.ssh", 0, 0) }},
		{"edited", func(fs afero.Fs) error {
			return afero.WriteFile(fs, "/home/alice/.ssh/authorized_keys", []byte(keyB+"\n"), 0o600)
		}},
		{"deleted", func(fs afero.Fs) error { return fs.RemoveAll("/home/alice/.ssh") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine(t)
			m.apply(t, user("alice", keyA1))
			if err := tt.spoil(m.fs); err != nil {
				t.Fatal(err)
			}
			m.apply(t, user("alice", keyA1))
			m.checkKeys(t, "alice", 1000, keyA1)
		})
	}
}

func TestLockOnRemoval(t *testing.T) {
	m := newMachine(t)
	m.apply(t, user("alice", keyA1), user("bob", keyB))
	if err := afero.WriteFile(m.fs, "/home/alice/notes.txt", []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.apply(t, user("bob", keyB))
	if got, want := m.stub.Calls()[3:], []string{"usermod --lock --expiredate 1 --shell /usr/sbin/nologin alice"}; !cmp.Equal(want, got) {
		t.Errorf("calls after removing alice = %q, want %q", got, want)
	}
	if got, want := m.passwdLine(t, "alice"), "alice:x:1000:1000:fabric SSH user:/home/alice:/usr/sbin/nologin"; got != want {
		t.Errorf("passwd line of a removed user = %q, want %q", got, want)
	}
	if got, want := lineOf(m.read(t, usermgrtest.ShadowFile), "alice"), "alice:!:19000:0:99999:7::1:"; got != want {
		t.Errorf("shadow line of a removed user = %q, want %q (locked, expired)", got, want)
	}
	m.checkKeys(t, "alice", 1000) // emptied
	m.checkKeys(t, "bob", 1001, keyB)
	if got := m.read(t, "/home/alice/notes.txt"); got != "keep me" {
		t.Errorf("a removed user's file now holds %q", got)
	}

	// Locked users stay locked without further work.
	before := m.snapshot(t)
	calls := len(m.stub.Calls())
	m.apply(t, user("bob", keyB))
	if diff := cmp.Diff(before, m.snapshot(t)); diff != "" || len(m.stub.Calls()) != calls {
		t.Errorf("applying again changed the machine (-before +after):\n%s\ncalls %q", diff, m.stub.Calls()[calls:])
	}

	// Every user removed: every one is locked.
	m.apply(t)
	m.checkKeys(t, "bob", 1001)

	// Added back: unlocked with its keys, same account.
	m.apply(t, user("alice", keyA2))
	if got, want := m.stub.Calls()[len(m.stub.Calls())-1], "usermod --expiredate '' --shell /bin/bash alice"; got != want {
		t.Errorf("last call = %q, want %q", got, want)
	}
	if got, want := m.passwdLine(t, "alice"), "alice:x:1000:1000:fabric SSH user:/home/alice:/bin/bash"; got != want {
		t.Errorf("passwd line of a user added back = %q, want %q", got, want)
	}
	m.checkKeys(t, "alice", 1000, keyA2)
}

func TestMalformedKeyChangesNothing(t *testing.T) {
	m := newMachine(t)
	m.apply(t, user("alice", keyA1))
	before := m.snapshot(t)
	calls := len(m.stub.Calls())
	err := m.manager.ApplyUsers(context.Background(), []records.SSHUser{
		user("alice", keyA1, keyA2), user("bob", keyB, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA bob@laptop"),
	})
	want := `refusing the SSH users: user bob: key 2 ("bob@laptop"): not a public key in authorized_keys format (want "TYPE BASE64 [COMMENT]", as in an id_*.pub file): its key data is invalid (ssh: short read)`
	if err == nil || err.Error() != want {
		t.Fatalf("ApplyUsers with a malformed key = %v, want %s", err, want)
	}
	if diff := cmp.Diff(before, m.snapshot(t)); diff != "" || len(m.stub.Calls()) != calls {
		t.Errorf("a refused set changed the machine (-before +after):\n%s\ncalls %q", diff, m.stub.Calls()[calls:])
	}
}

func TestReadOnlyFs(t *testing.T) {
	t.Run("new user", func(t *testing.T) {
		m := newMachine(t)
		before := m.snapshot(t)
		ro := usermgrtest.NewLinuxUserManagerFake(afero.NewReadOnlyFs(m.fs))
		err := ro.ApplyUsers(context.Background(), []records.SSHUser{user("alice", keyA1)})
		if err == nil || !strings.Contains(err.Error(), "SSH user alice: creating group fabric-users: ") || !strings.Contains(err.Error(), "operation not permitted") {
			t.Fatalf("ApplyUsers on a read-only fs = %v, want the failed creation", err)
		}
		if diff := cmp.Diff(before, m.snapshot(t)); diff != "" {
			t.Errorf("a failed apply changed the machine (-before +after):\n%s", diff)
		}
	})
	t.Run("new keys", func(t *testing.T) {
		m := newMachine(t)
		m.apply(t, user("alice", keyA1))
		ro := &usermgr.LinuxUserManager{Fs: afero.NewReadOnlyFs(m.fs), Creator: m.stub}
		err := ro.ApplyUsers(context.Background(), []records.SSHUser{user("alice", keyA2)})
		if err == nil || !strings.Contains(err.Error(), "SSH user alice: writing /home/alice/.ssh/authorized_keys: operation not permitted") {
			t.Fatalf("ApplyUsers on a read-only fs = %v, want the failed write", err)
		}
		m.checkKeys(t, "alice", 1000, keyA1)
	})
}

// TestOtherAccountsUntouched: accounts the manager did not make are never
// changed, whatever the set says.
func TestOtherAccountsUntouched(t *testing.T) {
	m := newMachine(t)
	// carol is a local user; daemon a system account someone put in the
	// managed group.
	passwd := m.read(t, usermgr.PasswdFile) + "carol:x:1000:1000:Carol:/home/carol:/bin/bash\n"
	group := m.read(t, usermgr.GroupFile) + "carol:x:1000:\nfabric-users:x:999:daemon\n"
	if err := afero.WriteFile(m.fs, usermgr.PasswdFile, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(m.fs, usermgr.GroupFile, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.fs.MkdirAll("/home/carol/.ssh", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := afero.WriteFile(m.fs, "/home/carol/.ssh/authorized_keys", []byte(keyB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := m.snapshot(t)
	m.apply(t, user("carol", keyA1))
	m.apply(t)
	if diff := cmp.Diff(before, m.snapshot(t)); diff != "" {
		t.Errorf("other accounts were changed (-before +after):\n%s", diff)
	}
	if calls := m.stub.Calls(); len(calls) != 0 {
		t.Errorf("ran %q", calls)
	}
	// A new user gets the next free UID.
	m.apply(t, user("alice", keyA1))
	if got, want := m.passwdLine(t, "alice"), "alice:x:1001:1001:fabric SSH user:/home/alice:/bin/bash"; got != want {
		t.Errorf("passwd line = %q, want %q", got, want)
	}
}

// TestOneFailureDoesNotStopTheOthers: bob cannot be created; alice is, and
// the next apply finishes bob.
func TestOneFailureDoesNotStopTheOthers(t *testing.T) {
	m := newMachine(t)
	m.stub.Fail = "useradd --groups fabric-users --shell /bin/bash bob"
	err := m.manager.ApplyUsers(context.Background(), []records.SSHUser{user("alice", keyA1), user("bob", keyB)})
	if err == nil || !strings.Contains(err.Error(), "SSH user bob: creating the user: ") {
		t.Fatalf("ApplyUsers = %v, want bob's failure", err)
	}
	m.checkKeys(t, "alice", 1000, keyA1)
	m.stub.Fail = ""
	m.apply(t, user("alice", keyA1), user("bob", keyB))
	m.checkKeys(t, "bob", 1001, keyB)
}

// TestSymlinkRefused: keys are never written through a symlink a user put
// in place of ~/.ssh or its authorized_keys.
func TestSymlinkRefused(t *testing.T) {
	for _, link := range []string{"/home/alice/.ssh", "/home/alice/.ssh/authorized_keys"} {
		t.Run(path.Base(link), func(t *testing.T) {
			dir := t.TempDir()
			m := newMachineOn(t, afero.NewBasePathFs(afero.NewOsFs(), dir))
			m.apply(t, user("alice", keyA1))
			if err := m.fs.RemoveAll(link); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(dir+"/target", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := m.fs.SymlinkIfPossible(dir+"/target", link); err != nil {
				t.Fatal(err)
			}
			err := m.manager.ApplyUsers(context.Background(), []records.SSHUser{user("alice", keyA2)})
			if err == nil || !strings.Contains(err.Error(), "(a symlink?): not writing keys there") {
				t.Fatalf("ApplyUsers through a symlink = %v, want a refusal", err)
			}
			if entries, _ := os.ReadDir(dir + "/target"); len(entries) != 0 {
				t.Errorf("the symlink's target got %d entries", len(entries))
			}
		})
	}
}

func TestApplyConcurrent(t *testing.T) {
	m := newMachine(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			users := []records.SSHUser{user("alice", keyA1)}
			if i%2 == 1 {
				users = append(users, user("bob", keyB))
			}
			if err := m.manager.ApplyUsers(context.Background(), users); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	m.apply(t, user("alice", keyA1), user("bob", keyB))
	m.checkKeys(t, "alice", 1000, keyA1)
	if strings.Count("\n"+m.read(t, usermgr.PasswdFile), "\nalice:") != 1 {
		t.Error("alice was created twice")
	}
}
