package sshusers_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/google/go-cmp/cmp"
)

func fingerprints(keys []sshusers.Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Fingerprint)
	}
	return out
}

func TestAdd(t *testing.T) {
	alice := records.SSHUser{Name: "alice", Keys: []string{keyA1}, Revision: 4}
	bob := records.SSHUser{Name: "bob", Keys: []string{keyB}, Revision: 5}
	tests := []struct {
		name  string
		users []records.SSHUser
		user  string
		keys  []string
		want  []records.SSHUser
		added []string
	}{
		{"first user", nil, "alice", []string{keyA1}, []records.SSHUser{{Name: "alice", Keys: []string{keyA1}}}, []string{sshuserstest.Fingerprint(1)}},
		{"new user sorted in", []records.SSHUser{bob}, "alice", []string{"  " + keyA1 + " "},
			[]records.SSHUser{{Name: "alice", Keys: []string{keyA1}}, bob}, []string{sshuserstest.Fingerprint(1)}},
		{"key added", []records.SSHUser{alice, bob}, "alice", []string{keyA1, keyA2},
			[]records.SSHUser{{Name: "alice", Keys: []string{keyA1, keyA2}, Revision: 4}, bob}, []string{sshuserstest.Fingerprint(2)}},
		{"key already there under another comment", []records.SSHUser{alice, bob}, "alice", []string{sshuserstest.Key(1, "renamed")},
			[]records.SSHUser{alice, bob}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, added, err := sshusers.Add(tt.users, tt.user, tt.keys)
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.added, fingerprints(added)); diff != "" {
				t.Errorf("added (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAddRefuses(t *testing.T) {
	full := make([]records.SSHUser, sshusers.MaxUsers)
	for i := range full {
		full[i] = records.SSHUser{Name: fmt.Sprintf("u%03d", i), Keys: []string{keyB}}
	}
	var many []string
	for i := range sshusers.MaxKeysPerUser {
		many = append(many, sshuserstest.Key(byte(100+i), ""))
	}
	alice := records.SSHUser{Name: "alice", Keys: many}
	tests := []struct {
		name  string
		users []records.SSHUser
		user  string
		keys  []string
		want  string
	}{
		{"bad name", nil, "Alice", []string{keyA1}, `invalid user name "Alice": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"reserved", nil, "daemon", []string{keyA1}, `user name "daemon" is reserved: it is a system account or fabric's group`},
		{"no keys", nil, "alice", nil, "user alice has no keys: give at least one"},
		{"malformed key", nil, "alice", []string{keyA1, "ssh-ed25519 AAAA alice@desktop"},
			`user alice: key 2 ("alice@desktop"): not a public key in authorized_keys format (want "TYPE BASE64 [COMMENT]", as in an id_*.pub file): its key data is invalid (ssh: short read)`},
		{"same key twice", nil, "alice", []string{keyA1, sshuserstest.Key(1, "")},
			fmt.Sprintf("user alice: key 2 (ssh-ed25519 %s) is the same key as key 1", sshuserstest.Fingerprint(1))},
		{"too many users", full, "alice", []string{keyA1}, "257 users: at most 256 are allowed"},
		{"too many keys", []records.SSHUser{alice}, "alice", []string{keyA1}, "user alice has 33 keys: at most 32 are allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := sshusers.Add(tt.users, tt.user, tt.keys)
			if err == nil {
				t.Fatalf("Add succeeded: %v", got)
			}
			if err.Error() != tt.want {
				t.Errorf("Add error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestAddLeavesInputAlone(t *testing.T) {
	users := []records.SSHUser{{Name: "alice", Keys: []string{keyA1}}}
	if _, _, err := sshusers.Add(users, "alice", []string{keyA2}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]records.SSHUser{{Name: "alice", Keys: []string{keyA1}}}, users); diff != "" {
		t.Errorf("Add changed its input (-want +got):\n%s", diff)
	}
}

func TestRemove(t *testing.T) {
	keyA3 := sshuserstest.Key(4, "alice@phone")
	alice := records.SSHUser{Name: "alice", Keys: []string{keyA1, keyA2, keyA3}, Revision: 4}
	bob := records.SSHUser{Name: "bob", Keys: []string{keyB}, Revision: 5}
	tests := []struct {
		name    string
		user    string
		keys    []string
		want    []records.SSHUser
		removed []string
	}{
		{"user", "alice", nil, []records.SSHUser{bob}, []string{sshuserstest.Fingerprint(1), sshuserstest.Fingerprint(2), sshuserstest.Fingerprint(4)}},
		{"key by fingerprint", "alice", []string{sshuserstest.Fingerprint(2)},
			[]records.SSHUser{{Name: "alice", Keys: []string{keyA1, keyA3}, Revision: 4}, bob}, []string{sshuserstest.Fingerprint(2)}},
		{"keys by line, any comment, twice", "alice", []string{sshuserstest.Key(1, "x"), keyA3, keyA3},
			[]records.SSHUser{{Name: "alice", Keys: []string{keyA2}, Revision: 4}, bob}, []string{sshuserstest.Fingerprint(1), sshuserstest.Fingerprint(4)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, removed, err := sshusers.Remove([]records.SSHUser{alice, bob}, tt.user, tt.keys)
			if err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.removed, fingerprints(removed)); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRemoveRefuses(t *testing.T) {
	users := []records.SSHUser{{Name: "alice", Keys: []string{keyA1, keyA2}}}
	tests := []struct {
		name     string
		user     string
		keys     []string
		want     string
		notFound bool
	}{
		{"unknown user", "carol", nil, `not found: there is no SSH user "carol"`, true},
		{"unknown key", "alice", []string{keyB}, "not found: user alice has no key " + sshuserstest.Fingerprint(3), true},
		{"unknown fingerprint", "alice", []string{"SHA256:nope"}, "not found: user alice has no key SHA256:nope", true},
		{"neither fingerprint nor key", "alice", []string{"alice@laptop"},
			`key 1: neither a fingerprint (SHA256:...) nor a public key: not a public key in authorized_keys format (want "TYPE BASE64 [COMMENT]", as in an id_*.pub file): it has fewer than two fields`, false},
		{"every key", "alice", []string{keyA1, sshuserstest.Fingerprint(2)},
			"removing those keys would leave user alice without keys: remove the user instead (fabric users remove alice)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := sshusers.Remove(users, tt.user, tt.keys)
			if err == nil {
				t.Fatal("Remove succeeded")
			}
			if err.Error() != tt.want {
				t.Errorf("Remove error:\n got %s\nwant %s", err, tt.want)
			}
			if got := errors.Is(err, sshusers.ErrNotFound); got != tt.notFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v", got, tt.notFound)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ok := []records.SSHUser{{Name: "alice", Keys: []string{keyA1, keyA2}}, {Name: "bob", Keys: []string{keyB}}}
	if err := sshusers.Check(ok); err != nil {
		t.Fatalf("Check: %v", err)
	}
	var big []records.SSHUser
	for i := range 5 {
		u := records.SSHUser{Name: fmt.Sprintf("u%d", i)}
		for j := range 32 {
			u.Keys = append(u.Keys, sshuserstest.Key(byte(32*i+j), strings.Repeat("c", 8000)))
		}
		big = append(big, u)
	}
	tests := []struct {
		name  string
		users []records.SSHUser
		want  string
	}{
		{"twice", []records.SSHUser{ok[1], ok[1]}, "user bob is listed twice"},
		{"bad name", []records.SSHUser{{Name: "root", Keys: []string{keyB}}}, `user name "root" is reserved: it is a system account or fabric's group`},
		{"bad key", []records.SSHUser{{Name: "bob", Keys: []string{keyB, "ssh-ed25519 AAAA " + strings.Repeat("c", 80)}}}, `user bob: key 2 ("` + strings.Repeat("c", 57) + `..."): not a public key in authorized_keys format (want "TYPE BASE64 [COMMENT]", as in an id_*.pub file): its key data is invalid (ssh: short read)`},
		{"no keys", []records.SSHUser{{Name: "bob"}}, "user bob has no keys: give at least one"},
		{"total", big, "the keys of all users take 1292960 bytes: at most 1048576 are allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sshusers.Check(tt.users)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Check = %v, want %s", err, tt.want)
			}
		})
	}
}
