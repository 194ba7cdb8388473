package bootstrapkey

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/fabricmesh/fabric/internal/atomicfile"
)

// Size is the length of a bootstrap key in bytes.
const Size = 32

// maxFileSize bounds what ReadFile reads: an encoded key is 44 bytes, so
// anything much larger is not a key file.
const maxFileSize = 1024

// Generate returns a new random key.
func Generate() ([]byte, error) {
	key := make([]byte, Size)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating bootstrap key: %w", err)
	}
	return key, nil
}

// Encode returns key in standard base64, without a newline.
func Encode(key []byte) string {
	return base64.StdEncoding.EncodeToString(key)
}

// WriteFile atomically creates path, mode 0600, holding Encode(key) and a
// newline. It refuses to replace an existing file (the error matches
// fs.ErrExist): a cluster's key must not change by accident.
func WriteFile(path string, key []byte) error {
	if len(key) != Size {
		return fmt.Errorf("writing bootstrap key file %s: key must be %d bytes, got %d", path, Size, len(key))
	}
	err := atomicfile.WriteFileNew(path, []byte(Encode(key)+"\n"), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("writing bootstrap key file %s: refusing to overwrite the existing file: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("writing bootstrap key file: %w", err)
	}
	return nil
}

// ReadFile reads a key written by WriteFile (or by hand: surrounding
// whitespace is ignored). It refuses a file that group or others may access.
func ReadFile(path string) ([]byte, error) {
	data, err := readPrivateFile(path)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("bootstrap key file %s is empty", path)
	}
	key := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
	n, err := base64.StdEncoding.Decode(key, data)
	if err != nil {
		// A CorruptInputError names only an offset, never the data.
		return nil, fmt.Errorf("bootstrap key file %s: not valid base64: %w", path, err)
	}
	if n != Size {
		return nil, fmt.Errorf("bootstrap key file %s: key must be %d bytes, got %d", path, Size, n)
	}
	return key[:n], nil
}

// readPrivateFile reads a small regular file that only its owner may access.
func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading bootstrap key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading bootstrap key: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("bootstrap key file %s is a directory", path)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("bootstrap key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("bootstrap key file %s has mode %04o: it must not be accessible by group or others (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading bootstrap key file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("bootstrap key file %s is too large to be a key (more than %d bytes)", path, maxFileSize)
	}
	return data, nil
}
