package usermgr

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/spf13/afero"
)

// Files of the account database.
const (
	PasswdFile = "/etc/passwd"
	GroupFile  = "/etc/group"
)

// account is one line of /etc/passwd.
type account struct {
	name     string
	uid, gid int
	home     string
	shell    string
}

// accounts is what the manager reads of the account database.
type accounts struct {
	byName map[string]account
	// groupExists: the managed group is in /etc/group; members are its
	// members.
	groupExists bool
	members     map[string]bool
}

// readAccounts reads /etc/passwd and the managed group of /etc/group.
func readAccounts(fsys afero.Fs, group string) (accounts, error) {
	a := accounts{byName: map[string]account{}, members: map[string]bool{}}
	err := eachLine(fsys, PasswdFile, func(n int, fields []string) error {
		if len(fields) != 7 {
			return fmt.Errorf("%s:%d: want 7 fields, got %d", PasswdFile, n, len(fields))
		}
		uid, err1 := strconv.Atoi(fields[2])
		gid, err2 := strconv.Atoi(fields[3])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s:%d: bad uid or gid", PasswdFile, n)
		}
		a.byName[fields[0]] = account{name: fields[0], uid: uid, gid: gid, home: fields[5], shell: fields[6]}
		return nil
	})
	if err != nil {
		return accounts{}, err
	}
	err = eachLine(fsys, GroupFile, func(n int, fields []string) error {
		if len(fields) != 4 {
			return fmt.Errorf("%s:%d: want 4 fields, got %d", GroupFile, n, len(fields))
		}
		if fields[0] != group {
			return nil
		}
		a.groupExists = true
		for _, m := range strings.Split(fields[3], ",") {
			if m != "" {
				a.members[m] = true
			}
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	return a, err
}

// eachLine calls fn with the ':'-separated fields of each line of path,
// skipping empty lines and comments.
func eachLine(fsys afero.Fs, path string, fn func(n int, fields []string) error) error {
	data, err := afero.ReadFile(fsys, path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, strings.Split(line, ":")); err != nil {
			return err
		}
	}
	return sc.Err()
}
