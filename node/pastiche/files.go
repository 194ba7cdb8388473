package pastiche

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tempPrefix starts the names of files being received. Stored names cannot
// start with '.', so a temporary file never shadows a stored one.
const tempPrefix = ".incoming-"

// fileMode is the mode of stored files: like the state directory they live
// in, they are root's.
const fileMode = 0o600

// checkHeader validates a file header; its errors are InvalidArgument.
func checkHeader(h *pastichepb.FileHeader) error {
	if h == nil {
		return status.Error(codes.InvalidArgument, "missing file header")
	}
	if err := CheckName(h.GetName()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if h.GetSize() < 0 {
		return status.Errorf(codes.InvalidArgument, "file %s: negative size %d", h.GetName(), h.GetSize())
	}
	if n := len(h.GetSha256()); n != 0 && n != sha256.Size {
		return status.Errorf(codes.InvalidArgument, "file %s: expected SHA-256 has %d bytes, want %d", h.GetName(), n, sha256.Size)
	}
	return nil
}

// removeTemp removes the temporary files a crash left in dir.
func removeTemp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("removing leftover %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// incoming is a file being received: a temporary file in dir that becomes
// the file named in the header on commit, or disappears on abort.
type incoming struct {
	dir  string
	hdr  *pastichepb.FileHeader
	f    *os.File
	n    int64
	hash hash.Hash
}

// create starts receiving the file of a checked header in dir.
func create(dir string, hdr *pastichepb.FileHeader) (*incoming, error) {
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "creating a file in %s: %v", dir, err)
	}
	return &incoming{dir: dir, hdr: hdr, f: f, hash: sha256.New()}, nil
}

// write appends p, refusing more data than the header announced.
func (in *incoming) write(p []byte) error {
	if in.n+int64(len(p)) > in.hdr.GetSize() {
		return status.Errorf(codes.InvalidArgument, "file %s: more than the %d bytes announced", in.hdr.GetName(), in.hdr.GetSize())
	}
	if _, err := in.f.Write(p); err != nil {
		return status.Errorf(codes.Internal, "writing %s: %v", in.hdr.GetName(), err)
	}
	in.hash.Write(p)
	in.n += int64(len(p))
	return nil
}

// commit checks the size and SHA-256 of what was written, then makes the
// file durable and puts it in place. It returns the SHA-256. On error the
// temporary file is gone and nothing was stored.
func (in *incoming) commit() ([]byte, error) {
	name := in.hdr.GetName()
	if in.n != in.hdr.GetSize() {
		in.abort()
		return nil, status.Errorf(codes.InvalidArgument, "file %s: %d bytes received, %d announced", name, in.n, in.hdr.GetSize())
	}
	sum := in.hash.Sum(nil)
	if want := in.hdr.GetSha256(); len(want) != 0 && !bytes.Equal(sum, want) {
		in.abort()
		return nil, status.Errorf(codes.DataLoss, "file %s: SHA-256 %x, expected %x", name, sum, want)
	}
	if err := in.publish(); err != nil {
		in.abort()
		return nil, status.Errorf(codes.Internal, "storing %s: %v", name, err)
	}
	return sum, nil
}

// publish syncs and closes the temporary file, renames it over the file's
// name and syncs the directory.
func (in *incoming) publish() error {
	err := in.f.Chmod(fileMode)
	if err == nil {
		err = in.f.Sync()
	}
	if err = errors.Join(err, in.f.Close()); err != nil {
		return err
	}
	if err := os.Rename(in.f.Name(), filepath.Join(in.dir, in.hdr.GetName())); err != nil {
		return err
	}
	return syncDir(in.dir)
}

// abort drops the temporary file.
func (in *incoming) abort() {
	_ = in.f.Close()
	_ = os.Remove(in.f.Name())
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// stat describes the stored file name: its size and SHA-256.
func stat(dir, name string) (*pastichepb.StatResponse, error) {
	if err := CheckName(name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "file name: %v", err)
	}
	f, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "no file %s is stored here", name)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "opening %s: %v", name, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading %s: %v", name, err)
	}
	return &pastichepb.StatResponse{Name: name, Size: n, Sha256: h.Sum(nil)}, nil
}
