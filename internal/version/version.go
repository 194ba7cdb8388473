// Package version reports what build of fabric is running: its version,
// its commit and the Go toolchain that built it.
//
// The Makefile sets the version and the commit at link time:
//
//	-ldflags "-X github.com/fabricmesh/fabric/internal/version.version=v0.1.0-3-g1a2b3c4
//	          -X github.com/fabricmesh/fabric/internal/version.commit=1a2b3c4..."
//
// A binary built without them (go build, go install) falls back to the
// build info the Go toolchain embeds: the module version (set by go install
// pkg@version) and the VCS revision (set when building inside a git
// checkout).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X; empty otherwise.
var (
	version string
	commit  string
)

// Unknown is the version or commit of a build that says nothing about it.
const Unknown = "unknown"

// Info describes a build.
type Info struct {
	// Version is the release, e.g. "v0.1.0" or, between releases,
	// "v0.1.0-3-g1a2b3c4" (git describe); "-dirty" marks uncommitted
	// changes.
	Version string
	// Commit is the full git commit hash, with "-dirty" if the tree had
	// uncommitted changes.
	Commit string
	// GoVersion is the toolchain, e.g. "go1.26.8".
	GoVersion string
}

// Get returns the running binary's build info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, commit, bi)
}

// resolve prefers the link-time values and falls back to bi (nil if the
// binary has no build info).
func resolve(ldVersion, ldCommit string, bi *debug.BuildInfo) Info {
	info := Info{Version: ldVersion, Commit: ldCommit, GoVersion: runtime.Version()}
	if bi == nil {
		return info.orUnknown()
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	if info.Commit == "" {
		info.Commit = vcsCommit(bi.Settings)
	}
	return info.orUnknown()
}

func vcsCommit(settings []debug.BuildSetting) string {
	var rev string
	var modified bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" && modified {
		rev += "-dirty"
	}
	return rev
}

func (i Info) orUnknown() Info {
	if i.Version == "" {
		i.Version = Unknown
	}
	if i.Commit == "" {
		i.Commit = Unknown
	}
	return i
}

// String is the one line that `fabric version` and `fabricd --version`
// print after the program's name, e.g.
// "v0.1.0-3-g1a2b3c4 (commit 1a2b3c4d..., go1.26.8)".
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}
