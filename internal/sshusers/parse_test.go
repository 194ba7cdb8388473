package sshusers_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/google/go-cmp/cmp"
)

// lines joins its arguments as the lines of a file.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

var (
	keyA1 = sshuserstest.Key(1, "alice@laptop")
	keyA2 = sshuserstest.Key(2, "alice@desktop")
	keyB  = sshuserstest.Key(3, "bob@work")
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []records.SSHUser
	}{
		{"no users", "users: []\n", nil},
		{"doc example", lines(
			"# fabric SSH users",
			"users:",
			"  - name: bob",
			"    keys: [\""+keyB+"\"]",
			"  - name: alice",
			"    keys:",
			"      - "+keyA1,
			"      - '  "+keyA2+"  '",
		), []records.SSHUser{{Name: "alice", Keys: []string{keyA1, keyA2}}, {Name: "bob", Keys: []string{keyB}}}},
		{"other key types", lines(
			"users:",
			"- {name: carol, keys: ['"+sshuserstest.RSA2048+"', '"+sshuserstest.ECDSA256+"']}",
		), []records.SSHUser{{Name: "carol", Keys: []string{sshuserstest.RSA2048, sshuserstest.ECDSA256}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sshusers.Parse("users.yaml", []byte(tt.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	many := []string{"users:"}
	for i := range sshusers.MaxUsers + 1 {
		many = append(many, fmt.Sprintf("- {name: u%d, keys: ['%s']}", i, keyB))
	}
	manyKeys := []string{"users:", "- name: alice", "  keys:"}
	for i := range sshusers.MaxKeysPerUser + 1 {
		manyKeys = append(manyKeys, "  - "+sshuserstest.Key(byte(10+i), ""))
	}
	tests := []struct {
		name, file, want string
	}{
		{"empty", "", `users.yaml: empty users file (want a mapping with key "users"; "users: []" for none)`},
		{"syntax", "users: [\n", "users.yaml:2: did not find expected node content"},
		{"two documents", lines("users: []", "---", "users: []"), "users.yaml:2: more than one YAML document"},
		{"not a mapping", "- alice\n", "users.yaml:1: want a mapping with keys users; got a sequence"},
		{"unknown key", lines("users: []", "rules: []"), `users.yaml:2: unknown key "rules" (want users)`},
		{"missing users", "# only a comment\nx: 1\n", "users.yaml:2: unknown key \"x\" (want users)\nusers.yaml:2: missing key \"users\""},
		{"users not a list", "users: alice\n", `users.yaml:1: users: want a sequence, got !!str "alice"`},
		{"unknown field", lines("users:", "- name: alice", "  key: ["+keyA1+"]"),
			"users.yaml:3: user: unknown field \"key\" (want name, keys)\nusers.yaml:2: user alice: missing field \"keys\""},
		{"missing name", lines("users:", "- keys: ['"+keyA1+"']"), `users.yaml:2: user: missing field "name"`},
		{"name not a string", lines("users:", "- {name: 42, keys: ['"+keyA1+"']}"), `users.yaml:2: user: name: want a string, got !!int "42"`},
		{"bad name", lines("users:", "- {name: Alice, keys: ['"+keyA1+"']}"),
			`users.yaml:2: user: invalid user name "Alice": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'`},
		{"reserved name", lines("users:", "- name: root", "  keys: ['"+keyA1+"']"),
			`users.yaml:2: user: user name "root" is reserved: it is a system account or fabric's group`},
		{"no keys", lines("users:", "- {name: alice, keys: []}"), "users.yaml:2: user alice: no keys: give at least one"},
		{"keys not a list", lines("users:", "- {name: alice, keys: '"+keyA1+"'}"), `users.yaml:2: user alice: keys: want a sequence, got !!str "` + keyA1 + `"`},
		{"key not a string", lines("users:", "- name: alice", "  keys:", "  - {a: b}"), "users.yaml:4: user alice: key 1: want a string, got a mapping"},
		{"malformed key", lines("users:", "- name: alice", "  keys:", "  - "+keyA1, "  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA alice@desktop"),
			`users.yaml:5: user alice: key 2 ("alice@desktop"): not a public key in authorized_keys format (want "TYPE BASE64 [COMMENT]", as in an id_*.pub file): its key data is invalid (ssh: short read)`},
		{"private key", lines("users:", "- name: alice", "  keys:", "  - |", "    -----BEGIN OPENSSH PRIVATE KEY-----", "    b3BlbnNzaC1rZXktdjEAAAAA", "    -----END OPENSSH PRIVATE KEY-----"),
			"users.yaml:4: user alice: key 1: this is a private key: give the public key (the .pub file) and keep the private key secret"},
		{"same key twice", lines("users:", "- name: alice", "  keys:", "  - "+keyA1, "  - "+sshuserstest.Key(1, "other comment")),
			fmt.Sprintf("users.yaml:5: user alice: key 2 (ssh-ed25519 %s \"other comment\") is listed twice (first at line 4)", sshuserstest.Fingerprint(1))},
		{"user twice", lines("users:", "- {name: alice, keys: ['"+keyA1+"']}", "- {name: alice, keys: ['"+keyA2+"']}"),
			"users.yaml:3: user alice: listed twice (first at line 2)"},
		{"alias", lines("users:", "- &a {name: alice, keys: ['"+keyA1+"']}", "- *a"),
			"users.yaml:3: user: want a mapping with fields name, keys; got an alias (aliases are not supported)"},
		{"every error", lines("users:", "- {name: Bob, keys: ['"+keyB+"']}", "- {name: carol, keys: [nope]}"),
			"users.yaml:2: user: invalid user name \"Bob\": want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'\n" +
				"users.yaml:3: user carol: key 1: not a public key in authorized_keys format (want \"TYPE BASE64 [COMMENT]\", as in an id_*.pub file): it has fewer than two fields"},
		{"too many users", lines(many...), fmt.Sprintf("users.yaml:%d: more than %d users", sshusers.MaxUsers+2, sshusers.MaxUsers)},
		{"too many keys", lines(manyKeys...), fmt.Sprintf("users.yaml:%d: user alice: more than %d keys", sshusers.MaxKeysPerUser+4, sshusers.MaxKeysPerUser)},
		{"too big", "users: []\n" + strings.Repeat("#", sshusers.MaxFileSize), fmt.Sprintf("users.yaml: %d bytes: a users file may have at most %d", sshusers.MaxFileSize+10, sshusers.MaxFileSize)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users, err := sshusers.Parse("users.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("Parse succeeded: %v", users)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), "b3BlbnNzaC1rZXktdjEAAAAA") {
				t.Errorf("the error quotes the private key: %v", err)
			}
		})
	}
}

func TestParseTotalKeyBytes(t *testing.T) {
	// Keys of about 8 KB each (long comments): the 130th passes
	// MaxTotalKeyBytes, at line 141.
	file := []string{"users:"}
	for i := range 5 {
		file = append(file, fmt.Sprintf("- name: u%d", i), "  keys:")
		for j := range 32 {
			file = append(file, "  - "+sshuserstest.Key(byte(32*i+j), strings.Repeat("c", 8000)))
		}
	}
	_, err := sshusers.Parse("users.yaml", []byte(lines(file...)))
	want := fmt.Sprintf("users.yaml:141: the keys of all users take more than %d bytes", sshusers.MaxTotalKeyBytes)
	if err == nil || err.Error() != want {
		t.Fatalf("Parse = %.500v..., want %s", err, want)
	}
}
