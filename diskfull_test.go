package fabric_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// smallFS is a tmpfs of its own, mounted for one test, that the test can
// fill up and free again.
type smallFS struct {
	dir    string
	filler string
}

// mountSmallFS mounts a tmpfs of size bytes (mode 0700: it is a state
// directory) and unmounts it at the end of the test.
func mountSmallFS(t *testing.T, size string) *smallFS {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small-fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("disk-full test: cannot mount a tmpfs (%v: %s)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v: %s", dir, err, out)
		}
	})
	return &smallFS{dir: dir, filler: filepath.Join(dir, "filler")}
}

// fill writes the filler file until the file system has no space left.
func (s *smallFS) fill(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(s.filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", s.dir, err)
			}
			return
		}
	}
}

// free removes the filler.
func (s *smallFS) free(t *testing.T) {
	t.Helper()
	if err := os.Remove(s.filler); err != nil {
		t.Fatal(err)
	}
}

// TestDiskFull: the coordinator's state directory is a small tmpfs,
// filled up while it activates nodes, and before it adds one (its store
// first using up the pages it had freed, with SSH users). Each time the
// CLI says what failed (the store could not write, no space left) and
// that the coordinator retries; the coordinator keeps running and
// answering; once the space is back the work completes with no admin
// step but the command the CLI printed, every peer active with a unique
// VPN IP, and a restarted coordinator opens its store (every page checked)
// with the same cluster.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("disk-full test: needs root (mounts a tmpfs)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fs := mountSmallFS(t, "8m")
	f, hosts := newFabric(t, 4, func(i int) nshost.PeerOptions {
		if i == 0 {
			return nshost.PeerOptions{StateDir: fs.dir}
		}
		return nshost.PeerOptions{}
	})
	coordinator, nodes, later := hosts[0], hosts[1:3], hosts[3]

	t.Run("activation", func(t *testing.T) {
		// Paused once its cluster is committed and its services run,
		// before any node is activated.
		const point = "core/coordinator/services-started"
		restartWith(t, ctx, f, coordinator, crashpoint.EnvPause+"="+point)
		cli, err := f.StartCLI(f.ActivateArgs(coordinator, nodes)...)
		if err != nil {
			t.Fatal(err)
		}
		waitStopped(t, ctx, f, coordinator, point)
		fs.fill(t)
		if err := f.Daemon(coordinator).Continue(); err != nil {
			t.Fatal(err)
		}
		code, out := exited(t, ctx, cli)
		t.Logf("fabric activate on a full disk: exit %d\n%s", code, out)
		checkDiskFullOutput(t, code, out)
		checkAnswers(t, f)

		fs.free(t)
		retry := printedRetry(t, out)
		out, err = f.CLI(ctx, retry...)
		t.Logf("fabric %s, with space:\n%s", strings.Join(retry, " "), out)
		if err != nil {
			t.Fatal(err)
		}
		converge(t, f, 3)
	})

	t.Run("add-nodes", func(t *testing.T) {
		// The file system full, the store still writes into the pages
		// it freed before; SSH users are added until it cannot write a
		// small one either, then a node.
		converge(t, f, 3)
		fs.fill(t)
		lastUser := exhaustStore(t, ctx, f)
		checkAnswers(t, f)
		code, out := cliCode(t, ctx, f, "add-nodes", "--nodes", f.Endpoint(later), "--admin-dir", f.AdminDir)
		t.Logf("fabric add-nodes on a full disk: exit %d\n%s", code, out)
		checkDiskFullOutput(t, code, out)
		checkAnswers(t, f)

		fs.free(t)
		retry := printedRetry(t, out)
		out, err := f.CLI(ctx, retry...)
		t.Logf("fabric %s, with space:\n%s", strings.Join(retry, " "), out)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := f.CLI(ctx, lastUser...); err != nil {
			t.Errorf("the SSH user refused on a full disk, with space: %v\n%s", err, out)
		}
		converge(t, f, 4)
	})
	if t.Failed() {
		return
	}

	held := vpnAddrs(t, ctx, f, hosts)
	restartWith(t, ctx, f, coordinator)
	converge(t, f, 4)
	st := status(t, f)
	checkUniqueIPs(t, st)
	checkKept(t, ctx, f, st, held)
	checkMesh(t, f, hosts)
}

// exhaustStore adds SSH users through the coordinator, with 7 KiB keys
// and then small ones, until its store cannot write even a small one, and
// returns the fabric users add that was refused last. Each refusal must
// say that no space is left.
func exhaustStore(t *testing.T, ctx context.Context, f *nshost.Fabric) []string {
	t.Helper()
	small := false
	for i := range 200 {
		comment := strings.Repeat("x", 7000)
		if small {
			comment = "small"
		}
		args := []string{"users", "add", fmt.Sprintf("filler%d", i), "--key", sshuserstest.Key(byte(i), comment), "--admin-dir", f.AdminDir}
		code, out := cliCode(t, ctx, f, args...)
		if code == 0 {
			continue
		}
		if code != 1 || !strings.Contains(out, "no space left on device") {
			t.Fatalf("fabric users add on a full disk: exit %d, want 1 saying no space is left:\n%s", code, out)
		}
		t.Logf("fabric users add %s on a full disk, after %d users: exit 1\n%s", args[2], i, out)
		if small {
			return args
		}
		small = true
	}
	t.Fatal("200 SSH users added on a full disk: the store never ran out of space")
	return nil
}

// cliCode runs fabric and returns its exit code and output.
func cliCode(t *testing.T, ctx context.Context, f *nshost.Fabric, args ...string) (int, string) {
	t.Helper()
	p, err := f.StartCLI(args...)
	if err != nil {
		t.Fatal(err)
	}
	return exited(t, ctx, p)
}

// checkDiskFullOutput checks what the CLI said when the coordinator's disk
// was full: exit 1, each node failed because the store could not write,
// retried by the coordinator, and the command that completes the work.
func checkDiskFullOutput(t *testing.T, code int, out string) {
	t.Helper()
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, want := range []string{"no space left on device", "(the coordinator retries it)", "fix them, then retry: fabric add-nodes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out, "fabric add-nodes --admin-dir") + strings.Count(out, "\n  fabric activate "); n != 1 {
		t.Errorf("output names %d commands to complete the work, want one", n)
	}
}

// checkAnswers checks that the coordinator, its disk full, still answers
// fabric status as the coordinator.
func checkAnswers(t *testing.T, f *nshost.Fabric) {
	t.Helper()
	st := status(t, f)
	if len(st.Peers) == 0 || st.Peers[0].Role != "coordinator" || st.Peers[0].State != "active" {
		t.Errorf("status on a full disk: %+v", st.Peers)
	}
}

// printedRetry is the fabric command the CLI's output ends with.
func printedRetry(t *testing.T, out string) []string {
	t.Helper()
	i := strings.LastIndex(out, "retry: fabric ")
	if i < 0 {
		t.Fatalf("no retry command in:\n%s", out)
	}
	line := out[i+len("retry: fabric "):]
	if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	return strings.Fields(line)
}
