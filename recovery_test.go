package fabric_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// waitStopped waits until h's fabricd stopped itself at a pause point.
func waitStopped(t *testing.T, ctx context.Context, f *nshost.Fabric, h *nshost.Host, point string) {
	t.Helper()
	p := f.Daemon(h)
	if _, err := p.WaitLog(ctx, crashpoint.PauseLine+point); err != nil {
		t.Fatal(err)
	}
	for !p.Stopped() {
		select {
		case <-ctx.Done():
			t.Fatalf("fabricd on %s logged its pause at %s but did not stop", h.Name(), point)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// restartWith restarts h's fabricd (or starts the one that crashed) with
// env (nil: none).
func restartWith(t *testing.T, ctx context.Context, f *nshost.Fabric, h *nshost.Host, env ...string) {
	t.Helper()
	o := f.PeerOptions(h)
	o.Env = env
	f.SetPeerOptions(h, o)
	select {
	case <-f.Daemon(h).Exited(): // crashed
	default:
		if err := f.StopFabricd(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.StartFabricd(ctx, h); err != nil {
		t.Fatal(err)
	}
}

// exited waits for p and returns its exit code and output.
func exited(t *testing.T, ctx context.Context, p *nshost.Process) (int, string) {
	t.Helper()
	select {
	case <-p.Exited():
	case <-ctx.Done():
		t.Fatalf("%s did not exit: %v\n%s", p, ctx.Err(), p.Log())
	}
	return p.ExitCode(), p.Log()
}

func mustExist(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestLostActivationAnswer is defect 1 of issue 9: the admin loses the
// coordinator's first answer after the coordinator committed the cluster.
// The CLI gives up at its deadline, on Ctrl-C or killed, always keeping
// the admin keys, and says how to finish; running the activation again
// resumes it; any other admin is refused.
func TestLostActivationAnswer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, hosts := newFabric(t, 3, nil)
	coordinator := hosts[0]
	const point = "core/coordinator/cluster-committed"
	restartWith(t, ctx, f, coordinator, crashpoint.EnvPause+"="+point)
	args := f.ActivateArgs(coordinator, hosts[1:])
	again := "fabric " + strings.Join(args, " ")
	keys := []string{filepath.Join(f.AdminDir, "admin.key"), filepath.Join(f.AdminDir, "admin-wg.key")}

	t.Run("the deadline passes", func(t *testing.T) {
		cli, err := f.StartCLI(append(args, "--timeout", "5s")...)
		if err != nil {
			t.Fatal(err)
		}
		waitStopped(t, ctx, f, coordinator, point)
		code, out := exited(t, ctx, cli)
		t.Logf("fabric activate --timeout 5s:\n%s", out)
		for _, want := range []string{"timed out (--timeout) with no answer from the coordinator: it may have created the cluster",
			"The admin keys stay in " + f.AdminDir, "run again:\n  " + again + "\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		mustExist(t, keys...)
	})
	t.Run("Ctrl-C", func(t *testing.T) {
		cli, err := f.StartCLI(args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.WaitLog(ctx, "resuming with the admin keys of an unfinished activation"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := cli.Interrupt(); err != nil {
			t.Fatal(err)
		}
		code, out := exited(t, ctx, cli)
		t.Logf("fabric activate, interrupted:\n%s", out)
		for _, want := range []string{"interrupted with no answer from the coordinator: it may have created the cluster", "run again:\n  " + again + "\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if code != 1 {
			t.Errorf("exit code %d, want 1", code)
		}
		mustExist(t, keys...)
	})
	t.Run("kill -9", func(t *testing.T) {
		cli, err := f.StartCLI(args...)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if err := cli.Kill(); err != nil {
			t.Fatal(err)
		}
		mustExist(t, keys...)
	})
	if t.Failed() {
		return
	}

	// The coordinator goes on: it activates the nodes with nobody
	// listening. The same command again resumes and completes the bundle.
	if err := f.Daemon(coordinator).Continue(); err != nil {
		t.Fatal(err)
	}
	out, err := f.CLI(ctx, args...)
	t.Logf("fabric activate again:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"exists: its activation resumes", "ok     node " + f.Endpoint(hosts[1]), "ok     node " + f.Endpoint(hosts[2])} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	mustExist(t, filepath.Join(f.AdminDir, "admin.json"), filepath.Join(f.AdminDir, "fabric-vpn.conf"))
	converge(t, f, 3)
	checkMesh(t, f, hosts)
	checkUniqueIPs(t, status(t, f))

	t.Run("any other admin is refused", func(t *testing.T) {
		other := filepath.Join(f.Admin.Dir(), "other-admin")
		out, err := f.CLI(ctx, "activate", "--coordinator", f.Endpoint(coordinator), "--nodes", f.Endpoints(hosts[1:]),
			"--bootstrap-key-file", f.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", other)
		if err == nil || !strings.Contains(out, "already active as the coordinator") {
			t.Errorf("activation by another admin: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(other, "admin.key")); err == nil {
			t.Error("the refused admin's keys were kept, though nothing of them was committed")
		}
	})
	t.Run("a finished activation is not repeated", func(t *testing.T) {
		out, err := f.CLI(ctx, args...)
		if err == nil || !strings.Contains(out, "whose activation finished") || !strings.Contains(out, "fabric add-nodes") {
			t.Errorf("activation into a complete admin dir: %v\n%s", err, out)
		}
	})
}

// TestCoordinatorCrashWhileActivating is defect 2 of issue 9: the
// coordinator is killed (SIGKILL) while it activates 8 nodes, and the CLI
// with it. Restarted, the coordinator completes every node on its own,
// with the VPN IPs they hold; no admin step. Then the same activation
// command writes the admin's complete bundle.
func TestCoordinatorCrashWhileActivating(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, hosts := newFabric(t, 9, nil)
	coordinator, nodes := hosts[0], hosts[1:]
	const point = "core/coordinator/node-answered"
	restartWith(t, ctx, f, coordinator, crashpoint.EnvCrash+"="+point+":4")
	args := f.ActivateArgs(coordinator, nodes)
	cli, err := f.StartCLI(args...)
	if err != nil {
		t.Fatal(err)
	}
	waitCrash(t, ctx, f, coordinator, point+":4")
	if err := cli.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("fabric activate until the crash:\n%s", cli.Log())
	held := vpnAddrs(t, ctx, f, hosts)
	t.Logf("VPN IPs the nodes hold after the crash: %v", held)
	if len(held) < 4 {
		t.Errorf("%d nodes hold a VPN IP after the crash, want at least the 4 that answered", len(held))
	}

	restartWith(t, ctx, f, coordinator)
	converge(t, f, 9) // with the admin.json the CLI wrote: no admin step
	st := status(t, f)
	checkUniqueIPs(t, st)
	checkKept(t, ctx, f, st, held)
	checkMesh(t, f, hosts)
	if _, err := f.Daemon(coordinator).WaitLog(ctx, "finishing the activation of nodes the coordinator had not brought to an outcome"); err != nil {
		t.Error(err)
	}

	out, err := f.CLI(ctx, args...)
	t.Logf("fabric activate again:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if !strings.Contains(out, "ok     node "+f.Endpoint(n)) {
			t.Errorf("output lacks %s as ok", f.Endpoint(n))
		}
	}
	mustExist(t, filepath.Join(f.AdminDir, "fabric-vpn.conf"))
}
