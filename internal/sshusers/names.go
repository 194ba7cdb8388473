package sshusers

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// NamePattern is what an SSH user's name must match: a Linux user name as
// Debian's useradd accepts it by default, 1 to 32 characters.
const NamePattern = `^[a-z][a-z0-9_-]{0,31}$`

var nameRE = regexp.MustCompile(NamePattern)

// ManagedGroup is the Linux group of the users fabric manages on a peer. It
// is also a reserved name.
const ManagedGroup = "fabric-users"

// reservedNames are the accounts of a Debian system (base-passwd's static
// users and those that common packages create) and fabric's own group. The
// peers' user managers also refuse to touch any account they did not make,
// whatever its name; this list only turns the common mistakes into an early
// error.
var reservedNames = []string{
	"_apt", "_chrony", "_rpc", "avahi", "backup", "bin", "chrony", "daemon", "dnsmasq", "games", "gnats",
	"irc", "list", "lp", "mail", "man", "messagebus", "news", "nobody", "ntp", "polkitd", "postfix",
	"proxy", "root", "sshd", "statd", "sync", "sys", "tcpdump", "tss", "uucp", "uuidd", "www-data",
	ManagedGroup,
}

// reservedPrefixes are name prefixes of system accounts.
var reservedPrefixes = []string{"systemd-"}

// CheckName checks an SSH user's name.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid user name %q: want 1-32 characters: a lowercase letter, then lowercase letters, digits, '_' or '-'", name)
	}
	if slices.Contains(reservedNames, name) {
		return fmt.Errorf("user name %q is reserved: it is a system account or fabric's group", name)
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("user name %q is reserved: names starting with %q are system accounts", name, p)
		}
	}
	return nil
}
