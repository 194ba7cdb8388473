package identity

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fabricmesh/fabric/internal/atomicfile"
)

// maxFileSize bounds what is read from an identity file; every real one is
// well under 1 KiB.
const maxFileSize = 64 << 10

// loadOrCreate parses the file name in dir, or, if it does not exist, makes a
// value with create and writes its encoding (mode 0600). isNew reports which
// happened. A private file that group or others may access is refused.
// parse's errors must not contain the file's content.
func loadOrCreate[T any](dir, name string, private bool,
	parse func(data []byte) (T, error),
	create func() (v T, encoded []byte, err error),
) (v T, isNew bool, err error) {
	path := filepath.Join(dir, name)
	data, err := readFile(path, private)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v, encoded, err := create()
		if err != nil {
			return v, false, fmt.Errorf("creating %s: %w", name, err)
		}
		if err := atomicfile.WriteFile(path, encoded, 0o600); err != nil {
			return v, false, fmt.Errorf("creating identity file: %w", err)
		}
		return v, true, nil
	case err != nil:
		return v, false, err
	}
	if v, err = parse(data); err != nil {
		return v, false, fmt.Errorf("identity file %s: %w", path, err)
	}
	return v, false, nil
}

// readFile reads a small regular file; if private, it refuses a file that
// group or others may access, as ssh does. A missing file gives an error
// matching fs.ErrNotExist.
func readFile(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading identity file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading identity file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); private && perm&0o077 != 0 {
		return nil, fmt.Errorf("identity file %s has mode %04o: a private key must not be accessible by group or others (chmod 600 %s)",
			path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading identity file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("identity file %s is too large (more than %d bytes)", path, maxFileSize)
	}
	return data, nil
}
