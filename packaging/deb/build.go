package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/fabricdconfig"
	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

//go:embed files
var staticFiles embed.FS

// Package metadata.
const (
	packageName = "fabric"
	arch        = "amd64"
	maintainer  = "fabric developers <fabric@example.org>"
	synopsis    = "WireGuard-meshed coordinator/node appliance"
	description = synopsis + `
fabric turns a set of Linux machines into a WireGuard full mesh with signed
services on top. Every machine runs the same daemon, fabricd; one command,
fabric activate, makes one of them the coordinator and the others nodes.
.
This package holds fabricd (with a hardened systemd unit and a commented
default config, /etc/fabric/fabricd.yaml) and the admin CLI, fabric.
fabricd uses kernel WireGuard when the kernel has it, else an embedded
wireguard-go.`
)

// options are the flags of the build.
type options struct {
	binDir, version, outDir string
	// mtime is every file's time in the package (SOURCE_DATE_EPOCH).
	mtime time.Time
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("deb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.binDir, "bin-dir", "", "directory holding the fabric and fabricd binaries to package")
	fs.StringVar(&o.version, "version", "", "the build's version (scripts/version.sh), e.g. v0.1.0-3-g1a2b3c4")
	fs.StringVar(&o.outDir, "out-dir", ".", "where to write fabric_<version>_amd64.deb")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	sec, err := strconv.ParseInt(epoch, 10, 64)
	switch {
	case o.binDir == "" || o.version == "":
		fmt.Fprintln(stderr, "deb: --bin-dir and --version are required (make deb gives them)")
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "deb: SOURCE_DATE_EPOCH %q: want the seconds of the last commit (make deb sets it)\n", epoch)
		return 2
	}
	o.mtime = time.Unix(sec, 0).UTC()
	path, err := build(o)
	if err != nil {
		fmt.Fprintf(stderr, "deb: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, path)
	return 0
}

var versionRE = regexp.MustCompile(`^v?(\d+\.\d+\.\d+)(?:-([0-9A-Za-z.]+?))??(?:-(\d+)-g([0-9a-f]+))?(-dirty)?$`)

// debianVersion maps a git-describe version to a Debian one that sorts the
// same way: v0.1.0 → 0.1.0, v0.2.0-rc1 → 0.2.0~rc1 (before 0.2.0),
// v0.1.0-3-g1a2b3c4 → 0.1.0+git3.g1a2b3c4 (after 0.1.0), -dirty → .dirty.
func debianVersion(v string) (string, error) {
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return "", fmt.Errorf("version %q: want vX.Y.Z, optionally -PRERELEASE, -N-gHASH and -dirty (git describe)", v)
	}
	out := m[1]
	if m[2] != "" {
		out += "~" + m[2]
	}
	var meta []string
	if m[3] != "" {
		meta = append(meta, "git"+m[3], "g"+m[4])
	}
	if m[5] != "" {
		meta = append(meta, "dirty")
	}
	if len(meta) > 0 {
		out += "+" + strings.Join(meta, ".")
	}
	return out, nil
}

// build writes the package and returns its path.
func build(o options) (string, error) {
	version, err := debianVersion(o.version)
	if err != nil {
		return "", err
	}
	stage, err := os.MkdirTemp("", "fabric-deb")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	contents, scripts, err := stageFiles(o, version, stage)
	if err != nil {
		return "", err
	}
	libc, err := libcDependency(filepath.Join(o.binDir, "fabric"), filepath.Join(o.binDir, "fabricd"))
	if err != nil {
		return "", err
	}
	info := nfpm.WithDefaults(&nfpm.Info{
		Name: packageName, Arch: arch, Platform: "linux", Version: version, VersionSchema: "none",
		Section: "net", Priority: "optional", Maintainer: maintainer, Description: description,
		MTime: o.mtime,
		Overridables: nfpm.Overridables{
			// procps: /bin/kill of the unit's ExecReload; passwd: useradd
			// and usermod for the SSH users.
			Depends:    append(libc, "passwd", "procps"),
			Recommends: []string{"wireguard-tools"},
			Contents:   contents,
			Scripts:    scripts,
			Umask:      0o022,
			Deb:        nfpm.Deb{Compression: "xz"},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("preparing the package: %w", err)
	}
	var buf bytes.Buffer
	if err := deb.Default.Package(info, &buf); err != nil {
		return "", fmt.Errorf("building the package: %w", err)
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(o.outDir, fmt.Sprintf("%s_%s_%s.deb", packageName, version, arch))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// stageFiles writes the generated and embedded files into stage and lists
// the package's contents and maintainer scripts.
func stageFiles(o options, version, stage string) (files.Contents, nfpm.Scripts, error) {
	var contents files.Contents
	add := func(src, dst string, mode os.FileMode, typ string) {
		contents = append(contents, &files.Content{
			Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: o.mtime},
		})
	}
	for _, bin := range []struct{ name, dst string }{{"fabric", "/usr/bin/fabric"}, {"fabricd", "/usr/sbin/fabricd"}} {
		src := filepath.Join(o.binDir, bin.name)
		if _, err := os.Stat(src); err != nil {
			return nil, nfpm.Scripts{}, fmt.Errorf("binary to package: %w", err)
		}
		add(src, bin.dst, 0o755, "")
	}
	write := func(name string, data []byte) (string, error) {
		path := filepath.Join(stage, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		return path, os.WriteFile(path, data, 0o644)
	}
	static := func(name string) (string, error) {
		data, err := staticFiles.ReadFile("files/" + name)
		if err != nil {
			return "", err
		}
		return write(name, data)
	}
	var errs []error
	stageOne := func(path string, err error) string {
		errs = append(errs, err)
		return path
	}
	add(stageOne(static("fabricd.service")), "/lib/systemd/system/fabricd.service", 0o644, "")
	add(stageOne(write("fabricd.yaml", fabricdconfig.DefaultFile())), "/etc/fabric/fabricd.yaml", 0o644, files.TypeConfigNoReplace)
	add(stageOne(write("copyright", copyright(o.mtime))), "/usr/share/doc/fabric/copyright", 0o644, "")
	changelog, err := gzipped(debianChangelog(version, o.mtime))
	errs = append(errs, err)
	add(stageOne(write("changelog.gz", changelog)), "/usr/share/doc/fabric/changelog.gz", 0o644, "")
	completion, err := bashCompletion()
	errs = append(errs, err)
	add(stageOne(write("fabric.bash", completion)), "/usr/share/bash-completion/completions/fabric", 0o644, "")
	pages, err := manPages(version, o.mtime)
	errs = append(errs, err)
	for _, p := range pages {
		gz, err := gzipped(p.content)
		errs = append(errs, err)
		add(stageOne(write("man/"+p.name+".gz", gz)), fmt.Sprintf("/usr/share/man/man%s/%s.gz", p.section, p.name), 0o644, "")
	}
	scripts := nfpm.Scripts{
		PostInstall: stageOne(static("postinst")),
		PreRemove:   stageOne(static("prerm")),
		PostRemove:  stageOne(static("postrm")),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nfpm.Scripts{}, fmt.Errorf("staging the package's files: %w", err)
	}
	return contents, scripts, nil
}

// gzipped compresses data as gzip -9n does: no name, no time, so the same
// data gives the same bytes.
func gzipped(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// debianChangelog is the package's changelog in Debian's format: one entry
// for this build. The project's history is its git log.
func debianChangelog(version string, mtime time.Time) []byte {
	return fmt.Appendf(nil, `%s (%s) unstable; urgency=medium

  * Automated build; the changes are in the project's git history.

 -- %s  %s
`, packageName, version, maintainer, mtime.Format(time.RFC1123Z))
}

func copyright(mtime time.Time) []byte {
	return fmt.Appendf(nil, `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fabric
Source: https://github.com/fabricmesh/fabric

Files: *
Copyright: %d fabric developers
License: unspecified
 The fabric project has not chosen a license yet. Until it does, all rights
 are reserved by its developers.
 .
 The binaries also contain Go modules under their own licenses (among them
 wireguard-go and wgctrl: MIT; gRPC and protobuf: Apache-2.0 and
 BSD-3-Clause; the Go standard library: BSD-3-Clause); "go version -m
 /usr/sbin/fabricd" lists them with their versions.
`, mtime.Year())
}

// libcDependency is the Depends a package of these binaries needs for libc:
// libc6 at the highest GLIBC_ symbol version they import (what
// dpkg-shlibdeps would find), or nothing for static binaries.
func libcDependency(paths ...string) ([]string, error) {
	var best []int
	for _, path := range paths {
		f, err := elf.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		syms, err := f.ImportedSymbols()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the imported symbols of %s: %w", path, err)
		}
		for _, s := range syms {
			v, ok := strings.CutPrefix(s.Version, "GLIBC_")
			if !ok {
				continue
			}
			if parsed := parseDotted(v); parsed != nil && slices.Compare(parsed, best) > 0 {
				best = parsed
			}
		}
	}
	if best == nil {
		return nil, nil
	}
	parts := make([]string, len(best))
	for i, n := range best {
		parts[i] = strconv.Itoa(n)
	}
	return []string{fmt.Sprintf("libc6 (>= %s)", strings.Join(parts, "."))}, nil
}

func parseDotted(s string) []int {
	var out []int
	for _, p := range strings.Split(s, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}
