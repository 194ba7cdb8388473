package usermgr

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// UserCreator changes the account database: the real one runs the shadow
// tools, usermgrtest.StubUserCreator edits the files of a memory file
// system.
type UserCreator interface {
	// CreateGroup creates the system group name.
	CreateGroup(ctx context.Context, name string) error
	// CreateUser creates the user name with a home directory, a group of
	// its own, membership in group and shell. It has no password: it logs
	// in with its keys only.
	CreateUser(ctx context.Context, name, group, shell string) error
	// LockUser locks the user's password, expires the account and sets its
	// shell to NoLoginShell.
	LockUser(ctx context.Context, name string) error
	// UnlockUser ends the expiry and sets the shell back to shell. The
	// password stays locked: fabric's users have none.
	UnlockUser(ctx context.Context, name, shell string) error
}

// LinuxUserCreator runs groupadd, useradd and usermod.
type LinuxUserCreator struct {
	// Root, if set, is the directory the tools work in (their --root):
	// its etc/passwd and home directories instead of the machine's. Tests
	// and containers use it; the user manager's Fs must then be rooted
	// there too.
	Root string
	// Run runs a command (default: exec, reporting its output on failure).
	Run func(ctx context.Context, name string, args ...string) error
}

var _ UserCreator = (*LinuxUserCreator)(nil)

func (c *LinuxUserCreator) run(ctx context.Context, tool string, args ...string) error {
	if c.Root != "" {
		args = append([]string{"--root", c.Root}, args...)
	}
	run := c.Run
	if run == nil {
		run = runCommand
	}
	return run(ctx, "/usr/sbin/"+tool, args...)
}

func runCommand(ctx context.Context, name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// CreateGroup implements UserCreator.
func (c *LinuxUserCreator) CreateGroup(ctx context.Context, name string) error {
	return c.run(ctx, "groupadd", "--system", name)
}

// CreateUser implements UserCreator.
func (c *LinuxUserCreator) CreateUser(ctx context.Context, name, group, shell string) error {
	return c.run(ctx, "useradd", "--create-home", "--user-group", "--groups", group, "--shell", shell,
		"--comment", "fabric SSH user", name)
}

// LockUser implements UserCreator.
func (c *LinuxUserCreator) LockUser(ctx context.Context, name string) error {
	return c.run(ctx, "usermod", "--lock", "--expiredate", "1", "--shell", NoLoginShell, name)
}

// UnlockUser implements UserCreator. (usermod --unlock is not used: it
// refuses accounts without a password, which fabric's users are.)
func (c *LinuxUserCreator) UnlockUser(ctx context.Context, name, shell string) error {
	return c.run(ctx, "usermod", "--expiredate", "", "--shell", shell, name)
}
