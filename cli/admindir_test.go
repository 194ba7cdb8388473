package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindAdminDir(t *testing.T) {
	work := t.TempDir()
	t.Chdir(work)
	home := filepath.Join(work, "home")
	xdg := filepath.Join(work, "xdg")
	explicit := filepath.Join(work, "explicit")
	bundle := func(dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, bundleFile), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clean := func() {
		t.Helper()
		for _, dir := range []string{localAdminDir, home, xdg} {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		flag    string
		env     map[string]string
		bundles []string // dirs holding a bundle
		dirs    []string // dirs without one
		want    string
		wantErr string
	}{
		{name: "flag wins", flag: explicit, env: map[string]string{adminDirEnv: xdg}, bundles: []string{localAdminDir}, want: explicit},
		{name: "FABRIC_ADMIN_DIR before ./fabric-admin", env: map[string]string{adminDirEnv: explicit}, bundles: []string{localAdminDir}, want: explicit},
		{name: "FABRIC_ADMIN_DIR even without a bundle", env: map[string]string{adminDirEnv: explicit}, want: explicit},
		{name: "./fabric-admin before the user's dir", bundles: []string{localAdminDir, filepath.Join(home, ".config/fabric/admin")}, want: localAdminDir},
		{name: "./fabric-admin without a bundle is passed over", dirs: []string{localAdminDir}, bundles: []string{filepath.Join(home, ".config/fabric/admin")}, want: filepath.Join(home, ".config/fabric/admin")},
		{name: "XDG_CONFIG_HOME", env: map[string]string{"XDG_CONFIG_HOME": xdg}, bundles: []string{filepath.Join(xdg, "fabric/admin"), filepath.Join(home, ".config/fabric/admin")}, want: filepath.Join(xdg, "fabric/admin")},
		{name: "relative XDG_CONFIG_HOME is ignored", env: map[string]string{"XDG_CONFIG_HOME": "xdg"}, bundles: []string{"xdg/fabric/admin", filepath.Join(home, ".config/fabric/admin")}, want: filepath.Join(home, ".config/fabric/admin")},
		{name: "nowhere", dirs: []string{localAdminDir},
			wantErr: "no admin bundle found: looked in ./fabric-admin and " + filepath.Join(home, ".config/fabric/admin") + " ($FABRIC_ADMIN_DIR is not set); run 'fabric activate' first, or pass --admin-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clean()
			for _, d := range tt.bundles {
				bundle(d)
			}
			for _, d := range tt.dirs {
				if err := os.MkdirAll(d, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			env := environment{getenv: func(k string) string { return tt.env[k] }, homeDir: func() (string, error) { return home, nil }}
			got, err := env.findAdminDir(tt.flag)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("findAdminDir = %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("findAdminDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("no home directory", func(t *testing.T) {
		clean()
		env := environment{getenv: func(string) string { return "" }, homeDir: func() (string, error) { return "", errors.New("$HOME is not defined") }}
		_, err := env.findAdminDir("")
		if err == nil || !strings.Contains(err.Error(), "looked in ./fabric-admin (not in ~/.config/fabric/admin: finding the home directory: $HOME is not defined)") {
			t.Errorf("findAdminDir: %v", err)
		}
	})
}

func TestNewAdminDir(t *testing.T) {
	work := t.TempDir()
	t.Chdir(work)
	home := filepath.Join(work, "home")
	tests := []struct {
		name, flag, envDir  string
		want, wantDescribed string
	}{
		{"flag", "elsewhere", "", "elsewhere", filepath.Join(work, "elsewhere") + " (later commands need --admin-dir elsewhere or FABRIC_ADMIN_DIR=" + filepath.Join(work, "elsewhere") + ")"},
		{"FABRIC_ADMIN_DIR", "", "/srv/admin", "/srv/admin", "/srv/admin (found through $FABRIC_ADMIN_DIR)"},
		{"default", "", "", localAdminDir, filepath.Join(work, localAdminDir) + " (found from " + work + "; elsewhere set FABRIC_ADMIN_DIR=" + filepath.Join(work, localAdminDir) + ", or move it to " + filepath.Join(home, ".config/fabric/admin") + ")"},
		{"the user's dir", filepath.Join(home, ".config/fabric/admin"), "", filepath.Join(home, ".config/fabric/admin"), filepath.Join(home, ".config/fabric/admin") + " (found from any directory)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := environment{getenv: func(k string) string {
				if k == adminDirEnv {
					return tt.envDir
				}
				return ""
			}, homeDir: func() (string, error) { return home, nil }}
			got := env.newAdminDir(tt.flag)
			if got != tt.want {
				t.Errorf("newAdminDir(%q) = %q, want %q", tt.flag, got, tt.want)
			}
			if d := env.describeAdminDir(got); d != tt.wantDescribed {
				t.Errorf("describeAdminDir(%q) =\n%s\nwant\n%s", got, d, tt.wantDescribed)
			}
		})
	}
}
