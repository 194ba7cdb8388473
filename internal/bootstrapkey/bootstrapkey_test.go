package bootstrapkey

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testKey is a fixed key whose encoding the tests look for in error strings.
var testKey = bytes.Repeat([]byte{0xA5, 0x5A, 0x3C, 0xC3}, Size/4)

func writeRaw(tb testing.TB, path, content string, perm fs.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // not subject to the umask
		tb.Fatal(err)
	}
}

func TestGenerate(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	b, err := Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if len(a) != Size || len(b) != Size {
		t.Fatalf("key lengths %d and %d, want %d", len(a), len(b), Size)
	}
	if bytes.Equal(a, b) {
		t.Error("two generated keys are equal")
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	key, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bootstrap.key")
	if err := WriteFile(path, key); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Encode(key)+"\n", string(raw)); diff != "" {
		t.Errorf("file content (-want +got):\n%s", diff)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %v, want 0600", got)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	if !bytes.Equal(key, got) {
		t.Error("ReadFile returned a different key than was written")
	}
}

func TestEncode(t *testing.T) {
	got := Encode(testKey)
	if diff := cmp.Diff(base64.StdEncoding.EncodeToString(testKey), got); diff != "" {
		t.Errorf("Encode (-want +got):\n%s", diff)
	}
	if strings.ContainsAny(got, "\r\n") {
		t.Errorf("Encode(%x) = %q contains a newline", testKey, got)
	}
}

func TestWriteFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		key     []byte
		setup   func(tb testing.TB, path string)
		wantErr error  // matched with errors.Is, if set
		wantIn  string // substring of the error
	}{
		{
			name:    "existing file",
			key:     testKey,
			setup:   func(tb testing.TB, path string) { writeRaw(tb, path, "old key\n", 0o600) },
			wantErr: fs.ErrExist,
			wantIn:  "refusing to overwrite",
		},
		{name: "short key", key: testKey[:16], wantIn: "must be 32 bytes, got 16"},
		{name: "nil key", key: nil, wantIn: "must be 32 bytes, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "bootstrap.key")
			if tt.setup != nil {
				tt.setup(t, path)
			}
			before, _ := os.ReadFile(path)
			err := WriteFile(path, tt.key)
			checkError(t, err, tt.wantErr, tt.wantIn, path)
			after, _ := os.ReadFile(path)
			if diff := cmp.Diff(string(before), string(after)); diff != "" {
				t.Errorf("file changed (-before +after):\n%s", diff)
			}
		})
	}
}

func TestReadFile(t *testing.T) {
	good := Encode(testKey)
	tests := []struct {
		name    string
		setup   func(tb testing.TB, path string) // nil: no file
		wantErr error
		wantIn  string // substring of the error; empty means success
	}{
		{name: "with newline", setup: content(good+"\n", 0o600)},
		{name: "surrounding whitespace and CRLF", setup: content("  \t"+good+"\r\n\n", 0o600)},
		{name: "read-only for owner", setup: content(good, 0o400)},
		{name: "missing file", wantErr: fs.ErrNotExist, wantIn: "no such file"},
		{name: "directory", setup: func(tb testing.TB, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				tb.Fatal(err)
			}
		}, wantIn: "is a directory"},
		{name: "readable by group", setup: content(good, 0o640), wantIn: "has mode 0640"},
		{name: "readable by others", setup: content(good, 0o604), wantIn: "has mode 0604"},
		{name: "writable by group", setup: content(good, 0o620), wantIn: "has mode 0620"},
		{name: "empty", setup: content("", 0o600), wantIn: "is empty"},
		{name: "only whitespace", setup: content(" \n\n", 0o600), wantIn: "is empty"},
		{name: "not base64", setup: content("this is not a key at all!!\n", 0o600), wantIn: "not valid base64"},
		{name: "url-safe base64", setup: content(base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, Size)), 0o600), wantIn: "not valid base64"},
		{name: "hex instead of base64", setup: content(strings.Repeat("ab", Size)+"=", 0o600), wantIn: "not valid base64"},
		{name: "too short", setup: content(Encode(testKey[:31]), 0o600), wantIn: "must be 32 bytes, got 31"},
		{name: "too long", setup: content(Encode(append(testKey, 1)), 0o600), wantIn: "must be 32 bytes, got 33"},
		{name: "two keys", setup: content(good+"\n"+good+"\n", 0o600), wantIn: "not valid base64"},
		{name: "huge file", setup: content(strings.Repeat(good, 100), 0o600), wantIn: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bootstrap.key")
			if tt.setup != nil {
				tt.setup(t, path)
			}
			key, err := ReadFile(path)
			if tt.wantIn == "" {
				if err != nil {
					t.Fatalf("ReadFile: %v", err)
				}
				if !bytes.Equal(testKey, key) {
					t.Errorf("ReadFile returned a different key")
				}
				return
			}
			if key != nil {
				t.Errorf("ReadFile returned a key along with an error")
			}
			checkError(t, err, tt.wantErr, tt.wantIn, path)
			if raw, _ := os.ReadFile(path); len(bytes.TrimSpace(raw)) > 0 && strings.Contains(err.Error(), string(bytes.TrimSpace(raw))) {
				t.Errorf("error %q echoes the file content", err)
			}
		})
	}
}

func content(s string, perm fs.FileMode) func(testing.TB, string) {
	return func(tb testing.TB, path string) { writeRaw(tb, path, s, perm) }
}

// checkError checks that err is an error naming path, containing wantIn,
// matching wantErr if set, and holding no encoding of testKey.
func checkError(tb testing.TB, err, wantErr error, wantIn, path string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("got no error, want one containing %q", wantIn)
	}
	tb.Logf("error: %v", err)
	msg := err.Error()
	if wantErr != nil && !errors.Is(err, wantErr) {
		tb.Errorf("error %q does not match %v", msg, wantErr)
	}
	if !strings.Contains(msg, wantIn) {
		tb.Errorf("error %q does not contain %q", msg, wantIn)
	}
	if !strings.Contains(msg, path) {
		tb.Errorf("error %q does not name the file %s", msg, path)
	}
	for _, secret := range []string{Encode(testKey), base64.RawStdEncoding.EncodeToString(testKey)[:20], string(testKey)} {
		if strings.Contains(msg, secret) {
			tb.Errorf("error %q contains the key", msg)
		}
	}
}
