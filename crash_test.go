package fabric_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/testbed/nshost"

	// The packages that declare crash points, so that crashpoint.All
	// lists every point fabricd has.
	_ "github.com/fabricmesh/fabric/node"
)

// crashScenario kills fabricd on one host at a crash point while the admin
// runs one command, restarts it, and checks that the cluster converges.
type crashScenario struct {
	// points: the process dies at the first; restarted, at the next one
	// (a crash during the recovery from the previous crash), and so on;
	// after the last it is restarted clean. NAME or NAME:N (the Nth hit).
	points []string
	// onNode: the node that is activated dies; else the coordinator.
	onNode bool
	// addNodes: the crash comes during `fabric add-nodes` of a third node
	// into a cluster of a coordinator and one node; else during `fabric
	// activate` of a coordinator and two nodes.
	addNodes bool
	// quick scenarios run in `make test`; FABRIC_CRASH_MATRIX=full runs
	// them all (make test-crash).
	quick bool
}

func (s crashScenario) name() string {
	where := "coordinator"
	if s.onNode {
		where = "node"
	}
	during := "activate"
	if s.addNodes {
		during = "add-nodes"
	}
	return strings.Join(s.points, "+") + "/" + where + "-during-" + during
}

// crashScenarios covers every crash point. The process that dies is
// started with the point armed just before the command, so a per-node point
// of the coordinator is hit first by the first node it calls.
var crashScenarios = []crashScenario{
	{points: []string{"core/coordinator/network-up"}, quick: true},
	{points: []string{"core/coordinator/cluster-committed"}, quick: true},
	{points: []string{"core/coordinator/started-sent"}},
	{points: []string{"core/coordinator/services-started"}},
	{points: []string{"core/coordinator/cluster-committed", "core/coordinator/activation-resumed"}},
	{points: []string{"core/coordinator/cluster-committed", "core/coordinator/recovery-loaded"}},
	{points: []string{"core/coordinator/node-state-read"}},
	{points: []string{"core/coordinator/node-reserved"}, quick: true},
	{points: []string{"core/coordinator/node-answered"}, quick: true},
	{points: []string{"core/coordinator/node-recorded"}},
	{points: []string{"core/coordinator/nodes-done"}},
	{points: []string{"core/coordinator/add-nodes-accepted"}, addNodes: true, quick: true},
	{points: []string{"core/coordinator/node-reserved"}, addNodes: true},
	{points: []string{"core/coordinator/node-answered"}, addNodes: true},
	{points: []string{"core/coordinator/nodes-done"}, addNodes: true},
	{points: []string{"coordinator/registrar/verified"}},
	{points: []string{"coordinator/registrar/recorded"}},
	{points: []string{"core/node/activation-received"}, onNode: true},
	{points: []string{"core/node/network-up"}, onNode: true},
	{points: []string{"core/node/config-committed"}, onNode: true, quick: true},
	{points: []string{"core/node/services-started"}, onNode: true},
	{points: []string{"core/node/config-committed"}, onNode: true, addNodes: true},
	{points: []string{"node/reeve/challenge-signed"}, onNode: true},
	{points: []string{"node/reeve/registered"}, onNode: true, quick: true},
}

// TestCrashPoints kills fabricd (SIGKILL) at every crash point of
// activation, registration and add-nodes, on the coordinator and on a
// node, restarts it, and checks after every restart that the cluster
// converges without an admin step (the one command the admin started
// completes, and `fabric watch` sees every peer active, registered and up
// to date), that every peer keeps the VPN IP it held, that no VPN IP is
// given twice (a node added afterwards gets a new one), and that the admin
// keeps access. Every declared point must have a scenario, and in the full
// matrix every point must have been hit.
func TestCrashPoints(t *testing.T) {
	full := os.Getenv("FABRIC_CRASH_MATRIX") == "full"
	runs := 1
	if n, err := strconv.Atoi(os.Getenv("FABRIC_CRASH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	covered := map[string]bool{}
	for _, s := range crashScenarios {
		for _, p := range s.points {
			name, _, _ := strings.Cut(p, ":")
			covered[name] = true
		}
	}
	var lines []string
	for _, p := range crashpoint.All() {
		lines = append(lines, fmt.Sprintf("  %-40s %s", p.Name, p.Doc))
		if !covered[p.Name] {
			t.Errorf("crash point %s has no scenario in crashScenarios: add one", p.Name)
		}
	}
	t.Logf("%d crash points:\n%s", len(lines), strings.Join(lines, "\n"))
	if err := nshost.Check(); err != nil {
		t.Skipf("multi-host test: %v", err)
	}

	var (
		mu  sync.Mutex
		hit = map[string]int{}
		ran int
	)
	t.Run("matrix", func(t *testing.T) {
		for _, s := range crashScenarios {
			if !full && !s.quick {
				continue
			}
			for run := range runs {
				t.Run(fmt.Sprintf("%s/run%d", s.name(), run+1), func(t *testing.T) {
					t.Parallel()
					got := runCrashScenario(t, s)
					mu.Lock()
					defer mu.Unlock()
					ran++
					for _, p := range got {
						hit[p]++
					}
				})
			}
		}
	})
	t.Logf("%d scenario runs, each converged: %v", ran, !t.Failed())
	if full && !t.Failed() && ran == len(crashScenarios)*runs { // not with -run picking some
		for _, p := range crashpoint.All() {
			if hit[p.Name] == 0 {
				t.Errorf("crash point %s was never hit: its scenario does not reach it", p.Name)
			}
		}
		t.Logf("crash points hit: %d of %d, %d crashes in all", len(hit), len(crashpoint.All()), sum(hit))
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// runCrashScenario runs s on a lab of its own and returns the points at
// which fabricd died.
func runCrashScenario(t *testing.T, s crashScenario) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f, hosts := newFabric(t, 3, nil)
	coordinator, first, target := hosts[0], hosts[1], hosts[2]
	victim := coordinator
	if s.onNode {
		victim = target
		if !s.addNodes {
			victim = first
		}
	}
	arm := func(point string) {
		o := f.PeerOptions(victim)
		o.Env = []string{crashpoint.EnvCrash + "=" + point}
		if point == "" {
			o.Env = nil
		}
		f.SetPeerOptions(victim, o)
	}
	restart := func(h *nshost.Host) {
		t.Helper()
		if err := f.StartFabricd(ctx, h); err != nil && !strings.Contains(err.Error(), "exited") {
			t.Fatal(err) // a fabricd that crashes at once is caught below
		}
	}

	args := f.ActivateArgs(coordinator, []*nshost.Host{first, target})
	if s.addNodes {
		activate(t, f, coordinator, []*nshost.Host{first})
		converge(t, f, 2)
		args = []string{"add-nodes", "--nodes", f.Endpoint(target), "--admin-dir", f.AdminDir}
	}
	arm(s.points[0])
	if err := f.StopFabricd(ctx, victim); err != nil {
		t.Fatal(err)
	}
	restart(victim)
	cli, err := f.StartCLI(append(args, "--timeout", "3m")...)
	if err != nil {
		t.Fatal(err)
	}

	var (
		died  []string
		helds []map[string]netip.Addr
	)
	for i, point := range s.points {
		next := ""
		if i+1 < len(s.points) {
			next = s.points[i+1]
		}
		name := waitCrash(t, ctx, f, victim, point)
		died = append(died, name)
		// What every running peer holds before the restart must hold after.
		helds = append(helds, vpnAddrs(t, ctx, f, hosts))
		arm(next)
		restart(victim)
	}

	select {
	case <-cli.Exited():
	case <-ctx.Done():
		t.Fatalf("fabric %s did not finish: %v\n%s", args[0], ctx.Err(), cli.Log())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fabric %s after the crash:\n%s", args[0], cli.Log())
		}
	})
	if code := cli.ExitCode(); code != 0 {
		t.Fatalf("fabric %s exited %d after the crash, want 0 (it asks again and completes)", args[0], code)
	}
	converge(t, f, 3)
	st := status(t, f)
	checkUniqueIPs(t, st)
	for _, held := range helds {
		checkKept(t, ctx, f, st, held)
	}
	checkMesh(t, f, hosts)

	// A node added now gets a VPN IP nobody had: none was given twice, not
	// even one reserved just before the crash.
	extra, err := f.AddPeers(ctx, 1, func(int) string { return "h4" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := f.AddNodes(ctx, extra); err != nil {
		t.Fatalf("fabric add-nodes after the crash: %v\n%s", err, out)
	}
	converge(t, f, 4)
	after := status(t, f)
	checkUniqueIPs(t, after)
	added := peerByName(t, after, "h4")
	for _, p := range append(st.Peers, st.Admins...) {
		if p.VPNIP == added.VPNIP {
			t.Errorf("the node added after the crash got %s, which %s had", added.VPNIP, p.Name)
		}
	}
	return died
}

// waitCrash waits until h's fabricd dies at point and checks that it was
// killed there by the crash point (SIGKILL after its log line).
func waitCrash(t *testing.T, ctx context.Context, f *nshost.Fabric, h *nshost.Host, point string) string {
	t.Helper()
	p := f.Daemon(h)
	select {
	case <-p.Exited():
	case <-ctx.Done():
		t.Fatalf("fabricd on %s never crashed at %s: %v", h.Name(), point, ctx.Err())
	}
	name, _, _ := strings.Cut(point, ":")
	if sig, ok := p.Signaled(); !ok || sig != syscall.SIGKILL {
		t.Fatalf("fabricd on %s ended with %v, want SIGKILL at %s; log:\n%s", h.Name(), p.Err(), point, tail(p.Log()))
	}
	if !strings.Contains(p.Log(), crashpoint.CrashLine+name+"\n") {
		t.Fatalf("fabricd on %s was killed, but not at %s; log:\n%s", h.Name(), point, tail(p.Log()))
	}
	return name
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// vpnAddrs is the VPN IP each host's fabric0 holds (hosts without one are
// left out).
func vpnAddrs(t *testing.T, ctx context.Context, f *nshost.Fabric, hosts []*nshost.Host) map[string]netip.Addr {
	t.Helper()
	out := map[string]netip.Addr{}
	for _, h := range hosts {
		if p := f.Daemon(h); p == nil || p.Err() != nil {
			continue
		}
		ip, err := f.VPNAddr(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if ip.IsValid() {
			out[h.Name()] = ip
		}
	}
	return out
}

// checkKept checks that every host still holds the VPN IP it held (and
// that the registry agrees).
func checkKept(t *testing.T, ctx context.Context, f *nshost.Fabric, st clusterstatus.Status, held map[string]netip.Addr) {
	t.Helper()
	for _, h := range f.Lab.Hosts() {
		want, ok := held[h.Name()]
		if !ok {
			continue
		}
		got, err := f.VPNAddr(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s held VPN IP %s before the restart and %s after", h.Name(), want, got)
		}
		if p := peerByName(t, st, h.Name()); p.VPNIP != want.String() {
			t.Errorf("%s holds VPN IP %s; the registry says %s", h.Name(), want, p.VPNIP)
		}
	}
}

// checkUniqueIPs checks that every record of the status (peers, admins)
// has a VPN IP of its own.
func checkUniqueIPs(t *testing.T, st clusterstatus.Status) {
	t.Helper()
	seen := map[string]string{}
	for _, p := range append(slices.Clone(st.Peers), st.Admins...) {
		if other, dup := seen[p.VPNIP]; dup {
			t.Errorf("VPN IP %s is held by %s and %s", p.VPNIP, other, p.Name)
		}
		seen[p.VPNIP] = p.Name
		if p.State != "active" {
			t.Errorf("peer %s is %s (%s), want active", p.Name, p.State, p.LastError)
		}
	}
}
