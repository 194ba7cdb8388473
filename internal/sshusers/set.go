package sshusers

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fabricmesh/fabric/internal/records"
)

// Limits of the cluster's SSH users. The whole set travels to every peer in
// one update, so it is kept small.
const (
	// MaxUsers is the number of users a cluster can have.
	MaxUsers = 256
	// MaxKeysPerUser is the number of keys one user can have (at least 1).
	MaxKeysPerUser = 32
	// MaxKeyLen is the length of one key line in bytes (an RSA key of
	// 16384 bits takes about 2,800).
	MaxKeyLen = 8192
	// MaxTotalKeyBytes bounds the key lines of all users together: about
	// 10,000 ed25519 keys or 1,400 RSA-4096 keys.
	MaxTotalKeyBytes = 1 << 20
	// MaxFileSize is the size of a users file.
	MaxFileSize = 2 << 20
)

// ErrNotFound: a user or key to remove is not in the set.
var ErrNotFound = errors.New("not found")

// Check checks a whole set of users, as stored or received: valid unique
// names, 1 to MaxKeysPerUser valid keys each without duplicates, and the
// limits. Errors name the user and the key.
func Check(users []records.SSHUser) error {
	if len(users) > MaxUsers {
		return fmt.Errorf("%d users: at most %d are allowed", len(users), MaxUsers)
	}
	seen := map[string]bool{}
	total := 0
	for _, u := range users {
		if err := CheckName(u.Name); err != nil {
			return err
		}
		if seen[u.Name] {
			return fmt.Errorf("user %s is listed twice", u.Name)
		}
		seen[u.Name] = true
		if _, err := parseUserKeys(u.Name, u.Keys); err != nil {
			return err
		}
		for _, k := range u.Keys {
			total += len(k)
		}
	}
	if total > MaxTotalKeyBytes {
		return fmt.Errorf("the keys of all users take %d bytes: at most %d are allowed", total, MaxTotalKeyBytes)
	}
	return nil
}

// parseUserKeys parses the keys of user name: 1 to MaxKeysPerUser, no key
// twice.
func parseUserKeys(name string, texts []string) ([]Key, error) {
	if len(texts) == 0 {
		return nil, fmt.Errorf("user %s has no keys: give at least one", name)
	}
	if len(texts) > MaxKeysPerUser {
		return nil, fmt.Errorf("user %s has %d keys: at most %d are allowed", name, len(texts), MaxKeysPerUser)
	}
	keys := make([]Key, 0, len(texts))
	first := map[string]int{}
	for i, text := range texts {
		k, err := ParseKey(text)
		if err != nil {
			return nil, fmt.Errorf("user %s: key %d%s: %w", name, i+1, Label(text), err)
		}
		if j, dup := first[k.Fingerprint]; dup {
			return nil, fmt.Errorf("user %s: key %d (%s) is the same key as key %d", name, i+1, k.Describe(), j+1)
		}
		first[k.Fingerprint] = i
		keys = append(keys, k)
	}
	return keys, nil
}

// Keys parses the keys of a user record (checked with Check).
func Keys(u records.SSHUser) ([]Key, error) {
	return parseUserKeys(u.Name, u.Keys)
}

// Add returns users with the user name holding keys too: a new user, or
// the keys it lacks added to an existing one (a key it already has, under
// any comment, is left as it is). added lists the keys that were new; none
// means users is unchanged. The result is sorted by name and checked.
func Add(users []records.SSHUser, name string, keys []string) (out []records.SSHUser, added []Key, err error) {
	if err := CheckName(name); err != nil {
		return nil, nil, err
	}
	parsed, err := parseUserKeys(name, keys)
	if err != nil {
		return nil, nil, err
	}
	out = clone(users)
	have := map[string]bool{}
	i := slices.IndexFunc(out, func(u records.SSHUser) bool { return u.Name == name })
	if i >= 0 {
		existing, err := Keys(out[i])
		if err != nil {
			return nil, nil, err
		}
		for _, k := range existing {
			have[k.Fingerprint] = true
		}
	} else {
		out = append(out, records.SSHUser{Name: name})
		i = len(out) - 1
	}
	for _, k := range parsed {
		if !have[k.Fingerprint] {
			out[i].Keys = append(out[i].Keys, k.Line)
			added = append(added, k)
		}
	}
	if len(added) == 0 {
		return clone(users), nil, nil
	}
	sortByName(out)
	if err := Check(out); err != nil {
		return nil, nil, err
	}
	return out, added, nil
}

// Remove returns users without the user name, or, when keys are given,
// without those keys of it. A key is given as its fingerprint
// ("SHA256:...") or as its line. The user, and each key, must exist
// (ErrNotFound); removing every key of a user is refused: remove the user.
// removed lists the keys removed (all of the user's keys when the user is).
func Remove(users []records.SSHUser, name string, keys []string) (out []records.SSHUser, removed []Key, err error) {
	i := slices.IndexFunc(users, func(u records.SSHUser) bool { return u.Name == name })
	if i < 0 {
		return nil, nil, fmt.Errorf("%w: there is no SSH user %q", ErrNotFound, name)
	}
	held, err := Keys(users[i])
	if err != nil {
		return nil, nil, err
	}
	out = clone(users)
	if len(keys) == 0 {
		return slices.Delete(out, i, i+1), held, nil
	}
	drop := map[string]bool{}
	for n, text := range keys {
		fp, err := fingerprintOf(text)
		if err != nil {
			return nil, nil, fmt.Errorf("key %d%s: %w", n+1, Label(text), err)
		}
		j := slices.IndexFunc(held, func(k Key) bool { return k.Fingerprint == fp })
		if j < 0 {
			return nil, nil, fmt.Errorf("%w: user %s has no key %s", ErrNotFound, name, fp)
		}
		if !drop[fp] {
			drop[fp] = true
			removed = append(removed, held[j])
		}
	}
	if len(drop) == len(held) {
		return nil, nil, fmt.Errorf("removing those keys would leave user %s without keys: remove the user instead (fabric users remove %s)", name, name)
	}
	out[i].Keys = nil
	for _, k := range held {
		if !drop[k.Fingerprint] {
			out[i].Keys = append(out[i].Keys, k.Line)
		}
	}
	return out, removed, nil
}

// fingerprintOf takes a fingerprint "SHA256:..." as it is and a key line to
// its fingerprint.
func fingerprintOf(text string) (string, error) {
	s := strings.TrimSpace(text)
	if strings.HasPrefix(s, "SHA256:") && !strings.ContainsAny(s, " \t") {
		return s, nil
	}
	k, err := ParseKey(s)
	if err != nil {
		return "", fmt.Errorf("neither a fingerprint (SHA256:...) nor a public key: %w", err)
	}
	return k.Fingerprint, nil
}

// Equal reports whether two sets hold the same users with the same keys,
// ignoring revisions.
func Equal(a, b []records.SSHUser) bool {
	return slices.EqualFunc(a, b, func(x, y records.SSHUser) bool {
		return x.Name == y.Name && slices.Equal(x.Keys, y.Keys)
	})
}

func clone(users []records.SSHUser) []records.SSHUser {
	out := make([]records.SSHUser, len(users))
	for i, u := range users {
		u.Keys = slices.Clone(u.Keys)
		out[i] = u
	}
	return out
}

func sortByName(users []records.SSHUser) {
	slices.SortFunc(users, func(a, b records.SSHUser) int { return cmp.Compare(a.Name, b.Name) })
}

// Describe says, for an operator, how the users changed from old to next:
// "added alice; removed bob; keys of carol changed".
func Describe(old, next []records.SSHUser) string {
	before := map[string][]string{}
	for _, u := range old {
		before[u.Name] = u.Keys
	}
	var added, changed, removed []string
	for _, u := range next {
		keys, had := before[u.Name]
		switch {
		case !had:
			added = append(added, u.Name)
		case !slices.Equal(keys, u.Keys):
			changed = append(changed, u.Name)
		}
		delete(before, u.Name)
	}
	for name := range before {
		removed = append(removed, name)
	}
	slices.Sort(removed)
	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{{"added ", added}, {"keys of ", changed}, {"removed ", removed}} {
		if len(p.names) > 0 {
			s := p.what + strings.Join(p.names, ", ")
			if p.what == "keys of " {
				s += " changed"
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}
