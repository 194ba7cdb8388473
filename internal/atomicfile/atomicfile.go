package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// fsOps are the steps that can fail after the temporary file exists. Tests
// replace them to check that a failure at any step leaves the old file intact
// and no temporary file behind.
type fsOps struct {
	write  func(f *os.File, data []byte) error
	sync   func(f *os.File) error
	rename func(oldPath, newPath string) error
	link   func(oldPath, newPath string) error
}

var osOps = fsOps{
	write: func(f *os.File, data []byte) error {
		_, err := f.Write(data)
		return err
	},
	sync:   (*os.File).Sync,
	rename: os.Rename,
	link:   os.Link,
}

// WriteFile atomically replaces path with data and gives it mode perm
// (exactly perm: the umask does not apply). The new file is written to a
// temporary file in the same directory, synced, and renamed over path; then
// the directory is synced. On any error before the rename the temporary file
// is removed and the old file, if any, is left untouched. If path is a
// symbolic link, the link itself is replaced.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, false, osOps)
}

// WriteFileNew is WriteFile for a file that must not exist yet: it fails with
// an error matching fs.ErrExist if path exists, and never replaces it. The
// check and the creation are one step (a hard link from the temporary file),
// so of two concurrent writers only one succeeds. The file system holding
// path must support hard links.
func WriteFileNew(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, true, osOps)
}

// writeFile writes data to a temporary file and publishes it at path, by
// rename or, if exclusive, by hard link. The temporary name never outlives
// the call.
func writeFile(path string, data []byte, perm os.FileMode, exclusive bool, ops fsOps) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmpPath := tmp.Name()
	tmpGone := false
	defer func() {
		if !tmpGone {
			_ = os.Remove(tmpPath)
		}
	}()
	if err := fill(tmp, data, perm, ops); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	publish := ops.rename
	if exclusive {
		publish = ops.link
	}
	if err := publish(tmpPath, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if exclusive {
		_ = os.Remove(tmpPath) // path keeps the data through its own link
	}
	tmpGone = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// fill writes data to f, sets its mode, syncs and closes it. It closes f in
// every case.
func fill(f *os.File, data []byte, perm os.FileMode, ops fsOps) error {
	err := ops.write(f, data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = ops.sync(f)
	}
	return errors.Join(err, f.Close())
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory: %w", err)
	}
	err = d.Sync()
	if closeErr := d.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
