package pastiche

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen is the longest file name, in bytes.
const MaxNameLen = 255

// CheckName reports whether name may name a stored file: a plain base name
// of at most MaxNameLen bytes of valid UTF-8, without '/', without a leading
// '.' (which also excludes "." and ".."), and without control characters.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("file name of %d bytes: at most %d allowed", len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("file name %q is not valid UTF-8", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("file name %q starts with '.'", name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("file name %q contains '/': give a plain name, not a path", name)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("file name %q contains a control character", name)
	}
	return nil
}
