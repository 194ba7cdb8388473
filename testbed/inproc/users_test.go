package inproc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/cli"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/testbed/inproc"
	"github.com/spf13/afero"
)

// userOn describes the SSH user name on peer p: its shell and the key
// lines of its authorized_keys ("" when it has no account).
func userOn(t *testing.T, p *inproc.Peer, name string) (shell string, keys []string) {
	t.Helper()
	passwd, err := afero.ReadFile(p.UsersFs, "/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(passwd), "\n") {
		if f := strings.Split(l, ":"); len(f) == 7 && f[0] == name {
			shell = f[6]
		}
	}
	if shell == "" {
		return "", nil
	}
	data, err := afero.ReadFile(p.UsersFs, "/home/"+name+"/.ssh/authorized_keys")
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			keys = append(keys, l)
		}
	}
	return shell, keys
}

// checkUser checks the SSH user name on every peer.
func checkUser(t *testing.T, peers []*inproc.Peer, name, wantShell string, wantKeys ...string) {
	t.Helper()
	for _, p := range peers {
		shell, keys := userOn(t, p, name)
		if shell != wantShell || strings.Join(keys, "\n") != strings.Join(wantKeys, "\n") {
			t.Errorf("%s: user %s has shell %q and keys %q; want %q and %q", p.Name, name, shell, keys, wantShell, wantKeys)
		}
	}
}

// TestSSHUsers: the users of --users and of 'fabric users add' reach every
// peer, the coordinator too; a removed user is locked on every peer; a peer
// added later and a restarted peer get them as well.
func TestSSHUsers(t *testing.T) {
	ctx := context.Background()
	c, peers := newCluster(t, 5)
	first, later := peers[:4], peers[4]
	alice, bob := sshuserstest.Key(1, "alice@laptop"), sshuserstest.Key(2, "bob@work")
	dir := t.TempDir()
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(usersFile, []byte("users:\n  - name: alice\n    keys: ['"+alice+"']\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bobFile := filepath.Join(dir, "id_ed25519.pub")
	if err := os.WriteFile(bobFile, []byte(bob+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cliOK(t, c, "activate", "--coordinator", first[0].Endpoint.String(), "--nodes", inproc.Endpoints(first[1:]),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", c.AdminDir(), "--users", usersFile)
	watch := func(n int) {
		cliOK(t, c, "watch", "--n", fmt.Sprint(n), "--timeout", "20s", "--admin-dir", c.AdminDir())
	}
	watch(4)
	checkUser(t, first, "alice", "/bin/bash", alice)

	out := cliOK(t, c, "users", "add", "bob", "--key-file", bobFile, "--admin-dir", c.AdminDir())
	if !strings.Contains(out, "added SSH user bob with 1 key(s)") {
		t.Errorf("users add said %q", out)
	}
	watch(4)
	checkUser(t, first, "bob", "/bin/bash", bob)

	var list cli.SSHUsers
	if err := json.Unmarshal([]byte(cliOK(t, c, "users", "list", "-o", "json", "--admin-dir", c.AdminDir())), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Users) != 2 || list.Users[0].Name != "alice" || list.Users[1].Keys[0].Fingerprint != sshuserstest.Fingerprint(2) {
		t.Errorf("users list = %+v", list)
	}

	out = cliOK(t, c, "users", "remove", "alice", "--admin-dir", c.AdminDir())
	if !strings.Contains(out, "removed SSH user alice") {
		t.Errorf("users remove said %q", out)
	}
	watch(4)
	checkUser(t, first, "alice", "/usr/sbin/nologin") // locked, no keys
	checkUser(t, first, "bob", "/bin/bash", bob)

	t.Run("node added later", func(t *testing.T) {
		cliOK(t, c, "add-nodes", "--nodes", later.Endpoint.String(), "--admin-dir", c.AdminDir())
		watch(5)
		checkUser(t, peers, "bob", "/bin/bash", bob)
		if shell, _ := userOn(t, later, "alice"); shell != "" {
			t.Errorf("a node added after alice was removed has her account (shell %q)", shell)
		}
	})
	t.Run("restart", func(t *testing.T) {
		if err := first[1].Restart(ctx); err != nil {
			t.Fatal(err)
		}
		cliOK(t, c, "users", "add", "alice", "--key", alice, "--admin-dir", c.AdminDir())
		watch(5)
		checkUser(t, first, "alice", "/bin/bash", alice) // unlocked
	})
}
