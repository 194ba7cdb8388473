package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDebianVersion(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "v0.1.0", want: "0.1.0"},
		{in: "0.1.0", want: "0.1.0"},
		{in: "v0.1.0-dirty", want: "0.1.0+dirty"},
		{in: "v0.1.0-3-g1a2b3c4", want: "0.1.0+git3.g1a2b3c4"},
		{in: "v0.0.0-88-g52ceee3-dirty", want: "0.0.0+git88.g52ceee3.dirty"},
		{in: "v0.2.0-rc1", want: "0.2.0~rc1"},
		{in: "v0.2.0-rc1-4-gabcdef0", want: "0.2.0~rc1+git4.gabcdef0"},
		{in: "1a2b3c4", wantErr: `version "1a2b3c4": want vX.Y.Z`},
		{in: "v1.2", wantErr: `version "v1.2": want vX.Y.Z`},
		{in: "", wantErr: `version "": want vX.Y.Z`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := debianVersion(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("debianVersion(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("debianVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestDebianVersionsSort checks with dpkg that the mapped versions sort
// as the releases do.
func TestDebianVersionsSort(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("needs dpkg --compare-versions")
	}
	order := []string{"v0.0.0-88-g52ceee3", "v0.1.0-rc1", "v0.1.0-rc1-2-gabcdef0", "v0.1.0", "v0.1.0-3-g1a2b3c4", "v0.1.1"}
	for i := 0; i+1 < len(order); i++ {
		a, _ := debianVersion(order[i])
		b, _ := debianVersion(order[i+1])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s (%s) does not sort before %s (%s)", a, order[i], b, order[i+1])
		}
	}
}

// stubBinaries puts a copy of true(1) (a small dynamically linked ELF like
// the real binaries) at bin/fabric and bin/fabricd.
func stubBinaries(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("needs /bin/true as a stand-in binary: %v", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"fabric", "fabricd"} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestBuild builds a package twice and checks that the two are the same
// bytes and hold what the package must hold.
func TestBuild(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("needs dpkg-deb to read the package")
	}
	bin := stubBinaries(t)
	o := options{binDir: bin, version: "v0.1.0-3-g1a2b3c4", mtime: time.Unix(1767225600, 0).UTC()}
	var debs [][]byte
	for _, out := range []string{t.TempDir(), t.TempDir()} {
		o.outDir = out
		path, err := build(o)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(out, "fabric_0.1.0+git3.g1a2b3c4_amd64.deb"); path != want {
			t.Errorf("path %s, want %s", path, want)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		debs = append(debs, data)
	}
	if !bytes.Equal(debs[0], debs[1]) {
		t.Error("two builds of the same inputs differ")
	}
	path := filepath.Join(o.outDir, "fabric_0.1.0+git3.g1a2b3c4_amd64.deb")

	out, err := exec.Command("dpkg-deb", "--fsys-tarfile", path).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	entries := tarEntries(t, out)
	for _, want := range []string{
		"./usr/bin/fabric", "./usr/sbin/fabricd", "./lib/systemd/system/fabricd.service", "./etc/fabric/fabricd.yaml",
		"./usr/share/bash-completion/completions/fabric", "./usr/share/man/man1/fabric.1.gz",
		"./usr/share/man/man1/fabric-activate.1.gz", "./usr/share/man/man1/fabric-version.1.gz",
		"./usr/share/man/man8/fabricd.8.gz", "./usr/share/doc/fabric/copyright", "./usr/share/doc/fabric/changelog.gz",
	} {
		e, ok := entries[want]
		if !ok {
			t.Errorf("package lacks %s", want)
			continue
		}
		if !e.mtime.Equal(o.mtime) || e.owner != "root/root" {
			t.Errorf("%s: mtime %v owner %s; want %v, root/root", want, e.mtime, e.owner, o.mtime)
		}
	}
	for name, e := range entries {
		wantMode := "-rw-r--r--"
		switch {
		case strings.HasSuffix(name, "/"):
			wantMode = "drwxr-xr-x"
		case name == "./usr/bin/fabric" || name == "./usr/sbin/fabricd":
			wantMode = "-rwxr-xr-x"
		}
		if e.mode != wantMode {
			t.Errorf("%s: mode %s, want %s", name, e.mode, wantMode)
		}
	}

	fields := map[string]string{}
	for _, f := range []string{"Package", "Version", "Architecture", "Depends", "Section"} {
		v, err := exec.Command("dpkg-deb", "--field", path, f).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", f, err)
		}
		fields[f] = strings.TrimSpace(string(v))
	}
	want := map[string]string{"Package": "fabric", "Version": "0.1.0+git3.g1a2b3c4", "Architecture": "amd64", "Depends": fields["Depends"], "Section": "net"}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("control fields (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(fields["Depends"], "libc6 (>= 2.") || !strings.HasSuffix(fields["Depends"], ", passwd, procps") {
		t.Errorf("Depends %q; want libc6 (>= 2.x) for the dynamically linked binaries passwd for useradd and procps for kill", fields["Depends"])
	}
	conffiles, err := exec.Command("sh", "-c", "dpkg-deb --ctrl-tarfile '"+path+"' | tar -xO ./conffiles").Output()
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/fabric/fabricd.yaml" {
		t.Errorf("conffiles %q, %v; want /etc/fabric/fabricd.yaml", conffiles, err)
	}
}

type tarEntry struct {
	mode, owner string
	mtime       time.Time
}

// tarEntries lists a tar archive with tar -tv.
func tarEntries(t *testing.T, archive []byte) map[string]tarEntry {
	t.Helper()
	cmd := exec.Command("tar", "-tv", "--full-time")
	cmd.Stdin = bytes.NewReader(archive)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tar -tv: %v", err)
	}
	entries := map[string]tarEntry{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("tar -tv line %q", line)
		}
		mtime, err := time.Parse("2006-01-02 15:04:05", f[3]+" "+f[4])
		if err != nil {
			t.Fatalf("tar -tv line %q: %v", line, err)
		}
		entries[f[5]] = tarEntry{mode: f[0], owner: f[1], mtime: mtime}
	}
	return entries
}

func TestLibcDependency(t *testing.T) {
	bin := stubBinaries(t)
	got, err := libcDependency(filepath.Join(bin, "fabric"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.HasPrefix(got[0], "libc6 (>= 2.") {
		t.Errorf("libcDependency(test binary) = %q; want libc6 (>= 2.x)", got)
	}
	notELF := filepath.Join(bin, "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := libcDependency(notELF); err == nil {
		t.Error("libcDependency(a shell script): no error")
	}
}
