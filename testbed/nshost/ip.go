package nshost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
)

var checkSeq atomic.Int64

// Check reports whether this machine can run a lab: root, the ip, sh and
// mount commands, and network namespaces that can be created. Its error
// names what is missing.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: run as root (sudo make demo, or go test as root)")
	}
	for _, bin := range []string{"ip", "sh", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("needs the %s command (iproute2, a shell, util-linux): %w", bin, err)
		}
	}
	probe := fmt.Sprintf("fabcheck%d_%d", os.Getpid(), checkSeq.Add(1))
	if err := runIP(context.Background(), "netns", "add", probe); err != nil {
		return fmt.Errorf("network namespaces are not usable: %w", err)
	}
	if err := runIP(context.Background(), "netns", "delete", probe); err != nil {
		return fmt.Errorf("network namespaces are not usable: %w", err)
	}
	return nil
}

// runIP runs ip(8) with args; its error includes the command and its output.
func runIP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return commandError(commandLine("ip", args), err, out)
	}
	return nil
}

// runIPBatch runs ip commands inside namespace ns in one `ip -batch`.
func runIPBatch(ctx context.Context, ns string, lines ...string) error {
	script := strings.Join(lines, "\n") + "\n"
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		desc := fmt.Sprintf("ip -n %s -batch - (%s)", ns, strings.Join(lines, "; "))
		return commandError(desc, err, out)
	}
	return nil
}

// maxOutput caps how much command output goes into an error.
const maxOutput = 4096

// commandError formats a failed command: what ran, how it failed, and the
// tail of its output.
func commandError(desc string, err error, out []byte) error {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return fmt.Errorf("%s: %w (no output)", desc, err)
	}
	if len(out) > maxOutput {
		out = append([]byte("..."), out[len(out)-maxOutput:]...)
	}
	return fmt.Errorf("%s: %w; output:\n%s", desc, err, out)
}

// commandLine renders a command for messages, quoting arguments that need it.
func commandLine(name string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, a := range append([]string{name}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`;&|<>*?()[]{}") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
