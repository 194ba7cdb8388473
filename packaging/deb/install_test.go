package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInstallOnDebian12 installs the package into a clean Debian 12
// (bookworm, minbase) root and checks it there: dpkg accepts it with its
// dependencies, fabricd runs and reports its version, the unit passes
// systemd-analyze verify and is enabled, the default config file is valid,
// lintian finds no error, and a purge removes it.
//
// The package is $FABRIC_DEB (make test sets it to what make deb built),
// else one built here from fresh binaries. The Debian root is made with
// mmdebstrap once and kept as a tarball in the user's cache dir for a
// week; every run unpacks a fresh copy.
func TestInstallOnDebian12(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("package test: needs root to make a Debian root and chroot into it (sudo make test)")
	}
	for _, tool := range []string{"mmdebstrap", "lintian", "systemd-analyze", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("package test: %s is missing: scripts/deps.sh installs it", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	deb := packageUnderTest(ctx, t)
	root := debianRoot(ctx, t)

	if err := copyFile(deb, filepath.Join(root, "tmp", "fabric.deb")); err != nil {
		t.Fatal(err)
	}
	chroot := func(args ...string) (string, error) {
		return runOut(ctx, append([]string{"chroot", root}, args...)...)
	}
	if out, err := chroot("dpkg", "-i", "/tmp/fabric.deb"); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	out, err := chroot("fabricd", "--version")
	if err != nil || !strings.HasPrefix(out, "fabricd v") || !strings.Contains(out, "(commit ") {
		t.Errorf("fabricd --version: %v, output %q; want fabricd vX (commit ..., go...)", err, out)
	}
	if out, err := chroot("fabric", "version"); err != nil || !strings.HasPrefix(out, "fabric v") {
		t.Errorf("fabric version: %v, output %q", err, out)
	}
	// The root has no man-db, so the unit's Documentation= man pages are
	// checked as files instead.
	if out, err := runOut(ctx, "systemd-analyze", "verify", "--man=no", "--root="+root, "fabricd.service"); err != nil || out != "" {
		t.Errorf("systemd-analyze verify fabricd.service: %v\n%s", err, out)
	}
	for _, page := range []string{"usr/share/man/man8/fabricd.8.gz", "usr/share/man/man1/fabric.1.gz"} {
		if _, err := os.Stat(filepath.Join(root, page)); err != nil {
			t.Errorf("man page of the unit's Documentation=: %v", err)
		}
	}
	if out, err := runOut(ctx, "systemctl", "--root="+root, "is-enabled", "fabricd.service"); err != nil || out != "enabled\n" {
		t.Errorf("systemctl is-enabled fabricd: %v, %q; want enabled", err, out)
	}
	// The shipped config is all comments: with a key and a listen address,
	// fabricd accepts it as it stands.
	if out, err := chroot("fabric", "key", "--out", "/etc/fabric/bootstrap.key"); err != nil {
		t.Fatalf("fabric key: %v\n%s", err, out)
	}
	if out, err := chroot("fabricd", "--check-config", "--listen", "198.51.100.10:7443"); err != nil || !strings.Contains(out, `state-dir: "/var/lib/fabric"  # default`) {
		t.Errorf("fabricd --check-config with the shipped config: %v\n%s", err, out)
	}
	if out, err := chroot("fabricd", "--check-config"); err == nil || !strings.Contains(out, `listen is required: set "listen" in /etc/fabric/fabricd.yaml or pass --listen`) {
		t.Errorf("fabricd --check-config without listen: %v, output %q; want exit 2 asking for listen", err, out)
	}

	out, _ = runOut(ctx, "lintian", "--tag-display-limit", "0", deb)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian: %s", line)
		}
	}
	t.Logf("lintian:\n%s", out)

	if out, err := chroot("dpkg", "--purge", "fabric"); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, gone := range []string{"usr/sbin/fabricd", "lib/systemd/system/fabricd.service", "etc/fabric/fabricd.yaml", "etc/systemd/system/multi-user.target.wants/fabricd.service"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("after purge, /%s is still there", gone)
		}
	}
}

// packageUnderTest returns $FABRIC_DEB, or builds a package from fresh
// binaries, built as make deb builds them (stripped: lintian's
// unstripped-binary-or-object is an error).
func packageUnderTest(ctx context.Context, t *testing.T) string {
	if deb := os.Getenv("FABRIC_DEB"); deb != "" {
		return deb
	}
	bin := t.TempDir()
	if out, err := runOut(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-buildmode=pie",
		"-ldflags", "-X github.com/fabricmesh/fabric/internal/version.version=v0.0.0-test -X github.com/fabricmesh/fabric/internal/version.commit=test -s -w",
		"-o", bin+"/", "github.com/fabricmesh/fabric/cmd/fabric", "github.com/fabricmesh/fabric/cmd/fabricd"); err != nil {
		t.Fatalf("building the binaries: %v\n%s", err, out)
	}
	path, err := build(options{binDir: bin, version: "v0.0.0-1-g0000000", outDir: t.TempDir(), mtime: time.Unix(1767225600, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// debianRoot unpacks a clean Debian 12 minbase root into a temporary
// directory, with systemd (whose targets the unit needs; the machines
// fabricd runs on boot it) and procps (the package's one dependency beyond
// minbase).
func debianRoot(ctx context.Context, t *testing.T) string {
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(cache, "fabric", "debian12-minbase-systemd.tar")
	if info, err := os.Stat(tarball); err != nil || time.Since(info.ModTime()) > 7*24*time.Hour {
		if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := tarball + ".tmp"
		t.Logf("making a Debian 12 root with mmdebstrap into %s (about a minute)", tarball)
		if out, err := runOut(ctx, "mmdebstrap", "--quiet", "--format=tar", "--variant=minbase", "--include=systemd,procps", "bookworm", tmp); err != nil {
			os.Remove(tmp)
			t.Fatalf("mmdebstrap: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, tarball); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	if out, err := runOut(ctx, "tar", "-xf", tarball, "-C", root); err != nil {
		t.Fatalf("unpacking the Debian root: %v\n%s", err, out)
	}
	return root
}

func runOut(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
