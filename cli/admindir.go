package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// Where the CLI finds the admin bundle without --admin-dir, in this order:
// $FABRIC_ADMIN_DIR, ./fabric-admin, $XDG_CONFIG_HOME/fabric/admin
// (~/.config/fabric/admin when XDG_CONFIG_HOME is unset). `fabric activate`
// writes to --admin-dir, else $FABRIC_ADMIN_DIR, else ./fabric-admin.
const (
	adminDirEnv   = "FABRIC_ADMIN_DIR"
	localAdminDir = "fabric-admin"
)

const adminDirHelp = "admin bundle written by 'fabric activate' (default: $" + adminDirEnv + ", else ./" + localAdminDir +
	", else $XDG_CONFIG_HOME/fabric/admin, whichever is set or holds a bundle first)"

// addAdminDirFlag defines --admin-dir on cmd.
func addAdminDirFlag(cmd *cobra.Command, dir *string) {
	cmd.Flags().StringVar(dir, "admin-dir", "", adminDirHelp)
}

// environment is what the admin dir lookup reads of the process.
type environment struct {
	getenv  func(string) string
	homeDir func() (string, error)
}

var osEnvironment = environment{getenv: os.Getenv, homeDir: os.UserHomeDir}

// userAdminDir is $XDG_CONFIG_HOME/fabric/admin, or ~/.config/fabric/admin.
func (env environment) userAdminDir() (string, error) {
	if x := env.getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "fabric", "admin"), nil
	}
	home, err := env.homeDir()
	if err != nil {
		return "", fmt.Errorf("finding the home directory: %w", err)
	}
	return filepath.Join(home, ".config", "fabric", "admin"), nil
}

// findAdminDir returns the admin dir to read: flag if given, else
// $FABRIC_ADMIN_DIR if set, else the first of ./fabric-admin and the user's
// admin dir that holds a bundle.
func (env environment) findAdminDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if dir := env.getenv(adminDirEnv); dir != "" {
		return dir, nil
	}
	candidates := []string{localAdminDir}
	user, err := env.userAdminDir()
	if err == nil {
		candidates = append(candidates, user)
	}
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, bundleFile)); err == nil {
			return dir, nil
		}
	}
	looked := "./" + strings.Join(candidates, " and ")
	if err != nil {
		looked += " (not in ~/.config/fabric/admin: " + err.Error() + ")"
	}
	return "", fmt.Errorf("no admin bundle found: looked in %s ($%s is not set); run 'fabric activate' first, or pass --admin-dir", looked, adminDirEnv)
}

// newAdminDir is where `fabric activate` writes the bundle: flag if given,
// else $FABRIC_ADMIN_DIR, else ./fabric-admin.
func (env environment) newAdminDir(flag string) string {
	if flag != "" {
		return flag
	}
	if dir := env.getenv(adminDirEnv); dir != "" {
		return dir
	}
	return localAdminDir
}

// openAdminDir finds the admin bundle (see findAdminDir) and loads it.
func openAdminDir(flag string) (*adminDir, error) {
	dir, err := osEnvironment.findAdminDir(flag)
	if err != nil {
		return nil, err
	}
	return loadAdminDir(dir)
}

// describeAdminDir says where a bundle was written and how later commands
// find it from elsewhere.
func (env environment) describeAdminDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	user, _ := env.userAdminDir()
	switch {
	case env.getenv(adminDirEnv) != "" && filepath.Clean(env.getenv(adminDirEnv)) == filepath.Clean(dir):
		return fmt.Sprintf("%s (found through $%s)", abs, adminDirEnv)
	case abs == user:
		return fmt.Sprintf("%s (found from any directory)", abs)
	case filepath.Clean(dir) == localAdminDir:
		return fmt.Sprintf("%s (found from %s; elsewhere set %s=%s, or move it to %s)", abs, filepath.Dir(abs), adminDirEnv, abs, user)
	}
	return fmt.Sprintf("%s (later commands need --admin-dir %s or %s=%s)", abs, dir, adminDirEnv, abs)
}
