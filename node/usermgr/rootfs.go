package usermgr

import (
	"os"
	"time"

	"github.com/spf13/afero"
)

// OpenHomeFs opens the home directory dir as an afero.Fs that no path can
// leave: a symlink pointing out of it (say ~/.ssh -> /root/.ssh, planted by
// the user to make root write elsewhere) makes every access through it
// fail (os.Root). The user manager writes ~/.ssh through it on a real
// machine; Close releases it.
func OpenHomeFs(dir string) (afero.Fs, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &rootFs{r: r}, nil
}

// rootFs is an afero.Fs over an os.Root. Names are relative to the root.
type rootFs struct{ r *os.Root }

var (
	_ afero.Fs      = (*rootFs)(nil)
	_ afero.Lstater = (*rootFs)(nil)
)

func (f *rootFs) Close() error                                 { return f.r.Close() }
func (f *rootFs) Name() string                                 { return "rootFs(" + f.r.Name() + ")" }
func (f *rootFs) Create(name string) (afero.File, error)       { return f.file(f.r.Create(name)) }
func (f *rootFs) Mkdir(name string, perm os.FileMode) error    { return f.r.Mkdir(name, perm) }
func (f *rootFs) MkdirAll(path string, perm os.FileMode) error { return f.r.MkdirAll(path, perm) }
func (f *rootFs) Open(name string) (afero.File, error)         { return f.file(f.r.Open(name)) }
func (f *rootFs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	return f.file(f.r.OpenFile(name, flag, perm))
}
func (f *rootFs) Remove(name string) error                  { return f.r.Remove(name) }
func (f *rootFs) RemoveAll(path string) error               { return f.r.RemoveAll(path) }
func (f *rootFs) Rename(oldname, newname string) error      { return f.r.Rename(oldname, newname) }
func (f *rootFs) Stat(name string) (os.FileInfo, error)     { return f.r.Stat(name) }
func (f *rootFs) Chmod(name string, mode os.FileMode) error { return f.r.Chmod(name, mode) }
func (f *rootFs) Chown(name string, uid, gid int) error     { return f.r.Chown(name, uid, gid) }
func (f *rootFs) Chtimes(name string, atime, mtime time.Time) error {
	return f.r.Chtimes(name, atime, mtime)
}

func (f *rootFs) LstatIfPossible(name string) (os.FileInfo, bool, error) {
	fi, err := f.r.Lstat(name)
	return fi, true, err
}

// file keeps a nil *os.File from becoming a non-nil afero.File.
func (f *rootFs) file(file *os.File, err error) (afero.File, error) {
	if err != nil {
		return nil, err
	}
	return file, nil
}
