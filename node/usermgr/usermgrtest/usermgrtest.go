// Package usermgrtest is the user manager's fake for tests:
// NewLinuxUserManagerFake runs the real LinuxUserManager on a (memory) file
// system whose account files a StubUserCreator edits as useradd and usermod
// would.
package usermgrtest

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fabricmesh/fabric/node/usermgr"
	"github.com/spf13/afero"
)

// ShadowFile is the shadow password file the stub keeps.
const ShadowFile = "/etc/shadow"

// BasePasswd, BaseGroup and BaseShadow are the account files
// NewLinuxUserManagerFake starts from when the file system has none: root,
// daemon and nobody.
const (
	BasePasswd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	BaseGroup  = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"
	BaseShadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"
)

// NewLinuxUserManagerFake returns the real user manager on fsys with a
// StubUserCreator on the same fsys (its Creator). It writes the base
// account files if fsys has no /etc/passwd.
func NewLinuxUserManagerFake(fsys afero.Fs) *usermgr.LinuxUserManager {
	if _, err := fsys.Stat(usermgr.PasswdFile); err != nil {
		must(fsys.MkdirAll("/etc", 0o755))
		must(fsys.MkdirAll("/home", 0o755))
		must(afero.WriteFile(fsys, usermgr.PasswdFile, []byte(BasePasswd), 0o644))
		must(afero.WriteFile(fsys, usermgr.GroupFile, []byte(BaseGroup), 0o644))
		must(afero.WriteFile(fsys, ShadowFile, []byte(BaseShadow), 0o640))
	}
	return &usermgr.LinuxUserManager{Fs: fsys, Creator: &StubUserCreator{Fs: fsys}, Logger: slog.New(slog.DiscardHandler)}
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("usermgrtest: seeding the account files: %v", err))
	}
}

// StubUserCreator implements usermgr.UserCreator by editing /etc/passwd,
// /etc/group and /etc/shadow on Fs as groupadd, useradd and usermod do
// (UIDs from 1000, a group per user, homes under /home), and records each
// call as the command line it stands for.
type StubUserCreator struct {
	Fs afero.Fs
	// Fail, if set, makes the calls whose command line starts with it fail.
	Fail string

	mu    sync.Mutex
	calls []string
}

var _ usermgr.UserCreator = (*StubUserCreator)(nil)

// Calls returns the command lines so far, e.g. "useradd alice".
func (s *StubUserCreator) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *StubUserCreator) call(line string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, line)
	if s.Fail != "" && strings.HasPrefix(line, s.Fail) {
		return fmt.Errorf("%s: injected failure", line)
	}
	return nil
}

// CreateGroup implements usermgr.UserCreator: a system group (GID < 1000).
func (s *StubUserCreator) CreateGroup(_ context.Context, name string) error {
	if err := s.call("groupadd --system " + name); err != nil {
		return err
	}
	groups, err := s.read(usermgr.GroupFile)
	if err != nil {
		return err
	}
	if findLine(groups, name) >= 0 {
		return fmt.Errorf("groupadd: group '%s' already exists", name)
	}
	gid := 999
	for gid > 100 && hasID(groups, 2, gid) {
		gid--
	}
	return s.write(usermgr.GroupFile, append(groups, fmt.Sprintf("%s:x:%d:", name, gid)))
}

// CreateUser implements usermgr.UserCreator.
func (s *StubUserCreator) CreateUser(_ context.Context, name, group, shell string) error {
	if err := s.call("useradd --groups " + group + " --shell " + shell + " " + name); err != nil {
		return err
	}
	passwd, err := s.read(usermgr.PasswdFile)
	if err != nil {
		return err
	}
	groups, err := s.read(usermgr.GroupFile)
	if err != nil {
		return err
	}
	shadow, err := s.read(ShadowFile)
	if err != nil {
		return err
	}
	if findLine(passwd, name) >= 0 {
		return fmt.Errorf("useradd: user '%s' already exists", name)
	}
	g := findLine(groups, group)
	if g < 0 {
		return fmt.Errorf("useradd: group '%s' does not exist", group)
	}
	id := usermgr.MinUID
	for hasID(passwd, 2, id) || hasID(groups, 2, id) {
		id++
	}
	home := "/home/" + name
	passwd = append(passwd, fmt.Sprintf("%s:x:%d:%d:fabric SSH user:%s:%s", name, id, id, home, shell))
	groups[g] = addMember(groups[g], name)
	groups = append(groups, fmt.Sprintf("%s:x:%d:", name, id))
	shadow = append(shadow, name+":!:19000:0:99999:7:::")
	if err := s.write(usermgr.PasswdFile, passwd); err != nil {
		return err
	}
	if err := s.write(usermgr.GroupFile, groups); err != nil {
		return err
	}
	if err := s.write(ShadowFile, shadow); err != nil {
		return err
	}
	if err := s.Fs.MkdirAll(home, 0o700); err != nil {
		return err
	}
	return s.Fs.Chown(home, id, id)
}

// LockUser implements usermgr.UserCreator: shell nologin, password locked
// ("!" prefix), account expired (day 1).
func (s *StubUserCreator) LockUser(_ context.Context, name string) error {
	if err := s.call("usermod --lock --expiredate 1 --shell " + usermgr.NoLoginShell + " " + name); err != nil {
		return err
	}
	return s.modify(name, usermgr.NoLoginShell, func(f []string) {
		if !strings.HasPrefix(f[1], "!") {
			f[1] = "!" + f[1]
		}
		f[7] = "1"
	})
}

// UnlockUser implements usermgr.UserCreator: shell back, no expiry.
func (s *StubUserCreator) UnlockUser(_ context.Context, name, shell string) error {
	if err := s.call("usermod --expiredate '' --shell " + shell + " " + name); err != nil {
		return err
	}
	return s.modify(name, shell, func(f []string) { f[7] = "" })
}

// modify sets the user's shell in /etc/passwd and edits its /etc/shadow
// fields.
func (s *StubUserCreator) modify(name, shell string, editShadow func([]string)) error {
	passwd, err := s.read(usermgr.PasswdFile)
	if err != nil {
		return err
	}
	shadow, err := s.read(ShadowFile)
	if err != nil {
		return err
	}
	p, sh := findLine(passwd, name), findLine(shadow, name)
	if p < 0 || sh < 0 {
		return fmt.Errorf("usermod: user '%s' does not exist", name)
	}
	pf := strings.Split(passwd[p], ":")
	pf[6] = shell
	passwd[p] = strings.Join(pf, ":")
	sf := strings.Split(shadow[sh], ":")
	editShadow(sf)
	shadow[sh] = strings.Join(sf, ":")
	if err := s.write(usermgr.PasswdFile, passwd); err != nil {
		return err
	}
	return s.write(ShadowFile, shadow)
}

func (s *StubUserCreator) read(name string) ([]string, error) {
	data, err := afero.ReadFile(s.Fs, name)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"), nil
}

func (s *StubUserCreator) write(name string, lines []string) error {
	mode := fs.FileMode(0o644)
	if name == ShadowFile {
		mode = 0o640
	}
	return afero.WriteFile(s.Fs, name, []byte(strings.Join(lines, "\n")+"\n"), mode)
}

// findLine returns the index of the line of name, or -1.
func findLine(lines []string, name string) int {
	return slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, name+":") })
}

// hasID reports whether a line has id in its field'th field.
func hasID(lines []string, field, id int) bool {
	return slices.ContainsFunc(lines, func(l string) bool {
		f := strings.Split(l, ":")
		return len(f) > field && f[field] == strconv.Itoa(id)
	})
}

func addMember(groupLine, name string) string {
	if strings.HasSuffix(groupLine, ":") {
		return groupLine + name
	}
	return groupLine + "," + name
}

// SeedRoot makes dir a throwaway root for the real shadow tools (useradd
// --root dir): etc/passwd, etc/group, etc/shadow and etc/gshadow with only
// root, unless dir already has etc/passwd. Tests and the namespace test
// bed run the real user manager there, never on the machine's own files.
func SeedRoot(dir string) error {
	osfs := afero.NewOsFs()
	passwd := filepath.Join(dir, "etc", "passwd")
	if _, err := osfs.Stat(passwd); err == nil {
		return nil
	}
	if err := osfs.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		return err
	}
	files := []struct {
		name, content string
		mode          fs.FileMode
	}{
		{"group", "root:x:0:\n", 0o644},
		{"shadow", "root:*:19000:0:99999:7:::\n", 0o640},
		{"gshadow", "root:*::\n", 0o640},
		{"passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644}, // last: its presence means done
	}
	for _, f := range files {
		if err := afero.WriteFile(osfs, filepath.Join(dir, "etc", f.name), []byte(f.content), f.mode); err != nil {
			return fmt.Errorf("seeding %s: %w", dir, err)
		}
	}
	return nil
}
