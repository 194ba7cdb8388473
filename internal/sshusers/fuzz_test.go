package sshusers_test

import (
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
)

// FuzzParse: any users file parses or is refused with errors that name the
// file; what parses is a valid set of users (Check) whose keys all parse,
// sorted by name.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		lines("users:", "  - name: alice", "    keys:", "      - "+sshuserstest.Key(1, "alice@laptop"), "      - "+sshuserstest.Key(2, "alice@desktop")),
		lines("users:", "  - {name: bob, keys: ['"+sshuserstest.Key(3, "bob@work")+"']}", "  - {name: alice, keys: ['"+sshuserstest.Key(1, "")+"']}"),
		lines("users: []"),
		lines("users:", "  - name: root", "    keys: [ssh-ed25519 AAAA]"),
		lines("users:", "  - name: alice", "    keys: ['command=\"x\" "+sshuserstest.Key(1, "c")+"']"),
		lines("users:", "  - {name: alice, keys: []}", "  - {name: alice, keys: []}"),
		"users: {",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := sshusers.Parse("users.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "users.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if err := sshusers.Check(users); err != nil {
			t.Fatalf("Parse accepted users that Check refuses: %v", err)
		}
		for i, u := range users {
			if i > 0 && users[i-1].Name >= u.Name {
				t.Fatalf("users not sorted by name: %q before %q", users[i-1].Name, u.Name)
			}
			if _, err := sshusers.Keys(u); err != nil {
				t.Fatalf("user %s: a key does not parse: %v", u.Name, err)
			}
		}
	})
}
