package sshusers

import (
	"fmt"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/yamlfile"
	"gopkg.in/yaml.v3"
)

// Parse parses a users file (format in the package documentation). name
// is the file name of error messages. Every problem is reported as
// "<name>:<line>: <what>"; when there are several, the error joins them
// all. The users come back sorted by name, their keys in canonical form.
func Parse(name string, data []byte) ([]records.SSHUser, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes: a users file may have at most %d", name, len(data), MaxFileSize)
	}
	root, err := yamlfile.Decode(name, data)
	if err != nil {
		return nil, err
	}
	if root == nil {
		return nil, fmt.Errorf("%s: empty users file (want a mapping with key \"users\"; \"users: []\" for none)", name)
	}
	p := &parser{Checker: yamlfile.Checker{Name: name}}
	users := p.file(root)
	if err := p.Err(); err != nil {
		return nil, err
	}
	if err := Check(users); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sortByName(users)
	return users, nil
}

// ParseOrNone parses a users file given as text; empty text means no
// users.
func ParseOrNone(name, text string) ([]records.SSHUser, error) {
	if text == "" {
		return nil, nil
	}
	if name == "" {
		name = "users"
	}
	return Parse(name, []byte(text))
}

type parser struct {
	yamlfile.Checker
	total int // bytes of the keys so far
}

var (
	topKeys    = []string{"users"}
	userFields = []string{"name", "keys"}
)

func (p *parser) file(root *yaml.Node) []records.SSHUser {
	top := p.Fields(root, "", "key", topKeys)
	if top == nil {
		return nil
	}
	n := top["users"]
	if n == nil {
		p.Errorf(root, "missing key \"users\"")
		return nil
	}
	items, _ := p.Seq(n, "users")
	var users []records.SSHUser
	lines := map[string]int{}
	for i, item := range items {
		if i == MaxUsers {
			p.Errorf(item, "more than %d users", MaxUsers)
			break
		}
		u, ok := p.user(item)
		switch {
		case !ok:
		case lines[u.Name] != 0:
			p.Errorf(item, "user %s: listed twice (first at line %d)", u.Name, lines[u.Name])
		default:
			users, lines[u.Name] = append(users, u), item.Line
		}
	}
	return users
}

func (p *parser) user(n *yaml.Node) (records.SSHUser, bool) {
	f := p.Fields(n, "user: ", "field", userFields)
	if f == nil {
		return records.SSHUser{}, false
	}
	if f["name"] == nil {
		p.Errorf(n, "user: missing field \"name\"")
		return records.SSHUser{}, false
	}
	name, ok := p.Str(f["name"], "user: name")
	if !ok {
		return records.SSHUser{}, false
	}
	if err := CheckName(name); err != nil {
		p.Errorf(f["name"], "user: %v", err)
		return records.SSHUser{}, false
	}
	if f["keys"] == nil {
		p.Errorf(n, "user %s: missing field \"keys\"", name)
		return records.SSHUser{}, false
	}
	keys, ok := p.keys(name, f["keys"])
	return records.SSHUser{Name: name, Keys: keys}, ok
}

func (p *parser) keys(user string, n *yaml.Node) ([]string, bool) {
	items, ok := p.Seq(n, "user "+user+": keys")
	if !ok {
		return nil, false
	}
	if len(items) == 0 {
		p.Errorf(n, "user %s: no keys: give at least one", user)
		return nil, false
	}
	if len(items) > MaxKeysPerUser {
		p.Errorf(items[MaxKeysPerUser], "user %s: more than %d keys", user, MaxKeysPerUser)
		return nil, false
	}
	var keys []string
	lines := map[string]int{}
	for i, item := range items {
		text, okStr := p.Str(item, fmt.Sprintf("user %s: key %d", user, i+1))
		if !okStr {
			ok = false
			continue
		}
		k, err := ParseKey(text)
		switch {
		case err != nil:
			p.Errorf(item, "user %s: key %d%s: %v", user, i+1, Label(text), err)
			ok = false
		case lines[k.Fingerprint] != 0:
			p.Errorf(item, "user %s: key %d (%s) is listed twice (first at line %d)", user, i+1, k.Describe(), lines[k.Fingerprint])
			ok = false
		default:
			lines[k.Fingerprint] = item.Line
			keys = append(keys, k.Line)
			p.total += len(k.Line)
			if p.total > MaxTotalKeyBytes {
				p.Errorf(item, "the keys of all users take more than %d bytes", MaxTotalKeyBytes)
				return nil, false
			}
		}
	}
	return keys, ok
}
