package version

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name                string
		ldVersion, ldCommit string
		bi                  *debug.BuildInfo
		want                Info
	}{
		{
			name:      "ldflags win over build info",
			ldVersion: "v0.1.0-3-g1a2b3c4", ldCommit: "1a2b3c4d5e",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v9.9.9"}, Settings: vcs("ffff", "true")},
			want: Info{Version: "v0.1.0-3-g1a2b3c4", Commit: "1a2b3c4d5e", GoVersion: "go1.26.8"},
		},
		{
			name: "go install pkg@version",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.2.0"}},
			want: Info{Version: "v0.2.0", Commit: Unknown, GoVersion: "go1.26.8"},
		},
		{
			name: "go build in a checkout",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("1a2b3c4d5e", "false")},
			want: Info{Version: Unknown, Commit: "1a2b3c4d5e", GoVersion: "go1.26.8"},
		},
		{
			name: "go build in a dirty checkout",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("1a2b3c4d5e", "true")},
			want: Info{Version: Unknown, Commit: "1a2b3c4d5e-dirty", GoVersion: "go1.26.8"},
		},
		{
			name:      "no build info",
			ldVersion: "v0.1.0",
			want:      Info{Version: "v0.1.0", Commit: Unknown, GoVersion: runtime.Version()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resolve(tt.ldVersion, tt.ldCommit, tt.bi)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("resolve (-want +got):\n%s", diff)
			}
		})
	}
}

func TestString(t *testing.T) {
	got := Info{Version: "v0.1.0-3-g1a2b3c4", Commit: "1a2b3c4d5e", GoVersion: "go1.26.8"}.String()
	want := "v0.1.0-3-g1a2b3c4 (commit 1a2b3c4d5e, go1.26.8)"
	if got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestGet checks the test binary's own build info: go test links no
// version, so the fields fall back, and none is empty.
func TestGet(t *testing.T) {
	got := Get()
	if got.Version == "" || got.Commit == "" || got.GoVersion != runtime.Version() {
		t.Errorf("Get() = %+v; want every field set and GoVersion %s", got, runtime.Version())
	}
}
