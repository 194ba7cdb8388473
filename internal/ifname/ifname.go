// Package ifname checks Linux network interface names, so that fabricd's
// config check and the network manager refuse the same names.
package ifname

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// MaxLen is IFNAMSIZ-1: Linux interface names are at most 15 bytes.
const MaxLen = 15

// Validate applies the kernel's dev_valid_name rules; the name also names
// wireguard-go's UAPI socket file, which these rules keep safe.
func Validate(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > MaxLen:
		return fmt.Errorf("interface name %q longer than %d bytes", name, MaxLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/:"):
		return fmt.Errorf("interface name %q contains '/' or ':'", name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || r > unicode.MaxASCII {
			return fmt.Errorf("interface name %q contains a space, control or non-ASCII character", name)
		}
	}
	return nil
}
