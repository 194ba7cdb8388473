package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// dirEntries lists the names in dir, so a test can see stray temp files.
func dirEntries(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func fileMode(tb testing.TB, path string) fs.FileMode {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name     string
		old      *string // nil: no file before
		data     string
		perm     fs.FileMode
		wantMode fs.FileMode
	}{
		{name: "new file", data: "hello\n", perm: 0o600, wantMode: 0o600},
		{name: "new file wider mode than umask allows", data: "x", perm: 0o666, wantMode: 0o666},
		{name: "replace", old: ptr("old content that is longer"), data: "new", perm: 0o644, wantMode: 0o644},
		{name: "replace narrows mode", old: ptr("old"), data: "new", perm: 0o600, wantMode: 0o600},
		{name: "empty", old: ptr("old"), data: "", perm: 0o600, wantMode: 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if tt.old != nil {
				if err := os.WriteFile(path, []byte(*tt.old), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(path, []byte(tt.data), tt.perm); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			if diff := cmp.Diff(tt.data, readFile(t, path)); diff != "" {
				t.Errorf("content (-want +got):\n%s", diff)
			}
			if got := fileMode(t, path); got != tt.wantMode {
				t.Errorf("mode = %v, want %v", got, tt.wantMode)
			}
			if diff := cmp.Diff([]string{"f"}, dirEntries(t, dir)); diff != "" {
				t.Errorf("directory entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteFileRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteFile("f", []byte("x"), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if diff := cmp.Diff("x", readFile(t, "f")); diff != "" {
		t.Errorf("content (-want +got):\n%s", diff)
	}
}

var errInjected = errors.New("injected failure")

func failing(step string) fsOps {
	ops := osOps
	switch step {
	case "write":
		ops.write = func(f *os.File, data []byte) error {
			_, _ = f.Write(data[:len(data)/2]) // a partial write, then failure
			return errInjected
		}
	case "sync":
		ops.sync = func(*os.File) error { return errInjected }
	case "rename":
		ops.rename = func(string, string) error { return errInjected }
	case "link":
		ops.link = func(string, string) error { return errInjected }
	}
	return ops
}

func TestWriteFileFailureKeepsOldFile(t *testing.T) {
	for _, step := range []string{"write", "sync", "rename"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if err := os.WriteFile(path, []byte("old"), 0o640); err != nil {
				t.Fatal(err)
			}
			err := writeFile(path, []byte("new content"), 0o600, false, failing(step))
			if !errors.Is(err, errInjected) {
				t.Fatalf("writeFile error = %v, want %v", err, errInjected)
			}
			if diff := cmp.Diff("old", readFile(t, path)); diff != "" {
				t.Errorf("content (-want +got):\n%s", diff)
			}
			if got := fileMode(t, path); got != 0o640 {
				t.Errorf("mode = %v, want 0640", got)
			}
			if diff := cmp.Diff([]string{"f"}, dirEntries(t, dir)); diff != "" {
				t.Errorf("directory entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteFileErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(tb testing.TB, dir string) string // returns the path to write
	}{
		{name: "missing directory", setup: func(_ testing.TB, dir string) string {
			return filepath.Join(dir, "nope", "f")
		}},
		{name: "path is a directory", setup: func(tb testing.TB, dir string) string {
			path := filepath.Join(dir, "sub")
			if err := os.Mkdir(path, 0o700); err != nil {
				tb.Fatal(err)
			}
			return path
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			before := dirEntries(t, dir)
			if err := WriteFile(path, []byte("x"), 0o600); err == nil {
				t.Fatal("WriteFile succeeded, want error")
			}
			if diff := cmp.Diff(before, dirEntries(t, dir)); diff != "" {
				t.Errorf("directory entries changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestWriteFileReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions; the injected failures in TestWriteFileFailureKeepsOldFile cover this path")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if err := WriteFile(path, []byte("new"), 0o600); err == nil {
		t.Fatal("WriteFile succeeded in a read-only directory, want error")
	}
	if diff := cmp.Diff("old", readFile(t, path)); diff != "" {
		t.Errorf("content (-want +got):\n%s", diff)
	}
}

func TestWriteFileNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFileNew(path, []byte("first"), 0o600); err != nil {
		t.Fatalf("first WriteFileNew: %v", err)
	}
	err := WriteFileNew(path, []byte("second"), 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteFileNew error = %v, want fs.ErrExist", err)
	}
	if diff := cmp.Diff("first", readFile(t, path)); diff != "" {
		t.Errorf("content (-want +got):\n%s", diff)
	}
	if got := fileMode(t, path); got != 0o600 {
		t.Errorf("mode = %v, want 0600", got)
	}
	if diff := cmp.Diff([]string{"f"}, dirEntries(t, dir)); diff != "" {
		t.Errorf("directory entries (-want +got):\n%s", diff)
	}
}

func TestWriteFileNewFailureLeavesNothing(t *testing.T) {
	for _, step := range []string{"write", "sync", "link"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			err := writeFile(path, []byte("new content"), 0o600, true, failing(step))
			if !errors.Is(err, errInjected) {
				t.Fatalf("writeFile error = %v, want %v", err, errInjected)
			}
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Errorf("directory entries = %q, want none", got)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
