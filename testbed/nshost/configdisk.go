package nshost

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// ConfigDiskLabel is the label of a VM's config disk: the fabric image
// reads its per-VM settings from the disk with this label at boot.
const ConfigDiskLabel = "FABRIC"

// configDiskKiB is the size of the vfat file system; the files are a few KiB.
const configDiskKiB = 1024

// MakeConfigDisk writes a vfat disk image labelled FABRIC holding files
// (slash-separated paths relative to its root; directories are made as
// needed), in the format of docs/image.md. An existing file at imagePath
// is replaced.
func MakeConfigDisk(ctx context.Context, imagePath string, files map[string][]byte) error {
	stage, err := os.MkdirTemp(filepath.Dir(imagePath), ".config-disk-")
	if err != nil {
		return fmt.Errorf("making config disk %s: %w", imagePath, err)
	}
	defer os.RemoveAll(stage)
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	})
	for _, name := range names {
		if path.Clean(name) != name || name == "." || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("making config disk %s: file name %q must be a clean relative path", imagePath, name)
		}
		p := filepath.Join(stage, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], 0o600); err != nil {
			return err
		}
	}
	_ = os.Remove(imagePath)
	if err := run(ctx, "mkfs.vfat", "-C", "-n", ConfigDiskLabel, imagePath, fmt.Sprint(configDiskKiB)); err != nil {
		return fmt.Errorf("making config disk: %w", err)
	}
	entries, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := run(ctx, "mcopy", "-s", "-Q", "-i", imagePath, filepath.Join(stage, e.Name()), "::/"); err != nil {
			return fmt.Errorf("making config disk: %w", err)
		}
	}
	return nil
}

// run runs a program on the machine (not in a host); its error includes
// the command and its output.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return commandError(commandLine(name, args), err, out)
	}
	return nil
}
