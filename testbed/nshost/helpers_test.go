package nshost

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/testlog"
)

// helperArg, as the first argument of the test binary, makes it a helper
// process instead of running tests (see runHelper).
const helperArg = "nshost-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// runHelper runs inside hosts:
//
//	listen PATH: serve "hello" on a unix socket at PATH until killed
//	dial PATH:   print what the unix socket at PATH says
func runHelper(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nshost-helper listen|dial PATH")
		return 2
	}
	switch args[0] {
	case "listen":
		ln, err := net.Listen("unix", args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening on", args[1])
		for {
			c, err := ln.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintln(c, "hello")
			c.Close()
		}
	case "dial":
		c, err := net.Dial("unix", args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(line)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper command", args[0])
	return 2
}

// requireRoot skips tb unless we are root, and fails it if root cannot run
// a lab here.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root to create network namespaces (run go test as root)")
	}
	if err := Check(); err != nil {
		tb.Fatalf("Check() = %v", err)
	}
}

// newLab makes a lab for tb, closed (and checked to leave no namespace) at
// cleanup. cfg.WorkDir and cfg.Logger default to a temp dir and tb.Logf.
func newLab(tb testing.TB, cfg Config) *Lab {
	tb.Helper()
	requireRoot(tb)
	if cfg.WorkDir == "" {
		cfg.WorkDir = tb.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testlog.New(tb)
	}
	l, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New() = %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("Close() = %v", err)
		}
		if left := namespacesWithPrefix(tb, l.Prefix()); len(left) > 0 {
			tb.Errorf("after Close, namespaces remain: %v", left)
		}
	})
	return l
}

// namespacesWithPrefix lists the lab's namespaces still present.
func namespacesWithPrefix(tb testing.TB, prefix string) []string {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		tb.Fatalf("ip netns list: %v: %s", err, out)
	}
	var found []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			found = append(found, f[0])
		}
	}
	return found
}

// linkNames lists the names of links of the given type ("" for all) in
// namespace ns ("" for the root namespace, read only).
func linkNames(tb testing.TB, ns, typ string) []string {
	tb.Helper()
	var args []string
	if ns != "" {
		args = append(args, "-n", ns)
	}
	args = append(args, "-o", "link", "show")
	if typ != "" {
		args = append(args, "type", typ)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names
}

// ping pings ip once from h.
func ping(ctx context.Context, h *Host, ip string) error {
	_, err := h.Run(ctx, "ping", "-c", "1", "-W", "2", ip)
	return err
}

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func itoa(i int) string { return fmt.Sprint(i) }
