package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// vpnCIDR is the benchmark's VPN: 10,000 nodes do not fit in a TEST-NET
// /24, so it takes a /16 of 198.18.0.0/15, the range RFC 2544 sets aside
// for benchmarks. It only ever exists inside the lab's namespaces.
const vpnCIDR = "198.18.0.0/16"

// options are fabric-scale's flags.
type options struct {
	binDir  string
	sizes   []int
	changes int
	settle  time.Duration
	idle    time.Duration
	timeout time.Duration
	workDir string
	perf    bool
	// wgEndpoints: the simulated nodes report WireGuard endpoints.
	wgEndpoints bool
	// store is where the coordinator keeps the cluster's records: bbolt
	// or etcd (3 members on namespace hosts of their own).
	store string
}

// Main is fabric-scale, the program of `make bench-scale`; `fabric-scale
// simulate` is the simulator process it starts.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "simulate" {
		return Simulate(ctx, args[1:], stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	if err := nshost.Check(); err != nil {
		fmt.Fprintln(stderr, "fabric-scale:", err)
		return 1
	}
	if err := raiseFileLimit(slices.Max(o.sizes) + o.changes); err != nil {
		fmt.Fprintln(stderr, "fabric-scale:", err)
		return 1
	}
	var lines []string
	failed := false
	for _, n := range o.sizes {
		r, err := runSize(ctx, o, n, stdout)
		if err != nil {
			fmt.Fprintf(stdout, "n=%d: FAILED: %v\n", n, err)
			failed = true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		line, _ := json.Marshal(r)
		lines = append(lines, string(line))
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	if failed {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("fabric-scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.binDir, "bin-dir", "bin", "directory holding fabric and fabricd")
	sizes := fs.String("n", "1000,10000", "comma-separated numbers of simulated nodes, one run each")
	fs.IntVar(&o.changes, "changes", 3, "joins, WireGuard endpoint changes and removals measured at each size (of each)")
	fs.DurationVar(&o.settle, "settle", 20*time.Second, "wait after the nodes joined before measuring the idle coordinator")
	fs.DurationVar(&o.idle, "idle", 30*time.Second, "how long the idle coordinator's CPU is measured")
	fs.DurationVar(&o.timeout, "timeout", 0, "bound of the join of all nodes (default 1 minute + 30 ms per node)")
	fs.StringVar(&o.workDir, "work-dir", "", "keep the lab's logs in this directory (default: a temporary one, removed)")
	fs.BoolVar(&o.wgEndpoints, "wg-endpoints", false, "the simulated nodes report WireGuard endpoints, where nothing answers: the coordinator's wireguard-go then retries a handshake with every node every 5 s (by default they report none, as roaming peers)")
	fs.StringVar(&o.store, "store", "bbolt", "where the coordinator keeps the cluster's records: bbolt (its fabric.db) or etcd (3 etcd members, testbed/etcdlab, each on a namespace host)")
	fs.BoolVar(&o.perf, "perf", false, "record perf profiles of the coordinator (idle, and during the changes) into the work directory")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 4 || n > 60000 {
			err = fmt.Errorf("-n: %q: want numbers of nodes from 4 to 60000", s)
			fmt.Fprintln(stderr, err)
			return o, err
		}
		o.sizes = append(o.sizes, n)
	}
	if o.store != "bbolt" && o.store != "etcd" {
		err := fmt.Errorf("--store %q: want bbolt or etcd", o.store)
		fmt.Fprintln(stderr, err)
		return o, err
	}
	if o.changes < 1 {
		err := errors.New("--changes must be at least 1")
		fmt.Fprintln(stderr, err)
		return o, err
	}
	var err error
	if o.binDir, err = filepath.Abs(o.binDir); err != nil {
		fmt.Fprintln(stderr, err)
		return o, err
	}
	return o, nil
}

// result is the JSON line of one size.
type result struct {
	N                   int     `json:"n"`
	Store               string  `json:"store"`
	WGEndpoints         bool    `json:"wg_endpoints"`
	JoinS               float64 `json:"join_s"`
	PropagationP50Ms    float64 `json:"propagation_p50_ms"`
	PropagationP99Ms    float64 `json:"propagation_p99_ms"`
	PropagationMaxMs    float64 `json:"propagation_max_ms"`
	ServicesP99Ms       float64 `json:"services_p99_ms"`
	RemovalP50Ms        float64 `json:"removal_p50_ms"`
	RemovalP99Ms        float64 `json:"removal_p99_ms"`
	RemovalMaxMs        float64 `json:"removal_max_ms"`
	EndpointP50Ms       float64 `json:"endpoint_p50_ms"`
	EndpointP99Ms       float64 `json:"endpoint_p99_ms"`
	EndpointMaxMs       float64 `json:"endpoint_max_ms"`
	BytesPerNode        float64 `json:"bytes_per_node"`
	RemovalBytes        float64 `json:"removal_bytes_per_node"`
	EndpointBytes       float64 `json:"endpoint_bytes_per_node"`
	CPUSPerChange       float64 `json:"cpu_s_per_change"`
	CPUSPerJoin         float64 `json:"cpu_s_per_join"`
	CPUSPerRemoval      float64 `json:"cpu_s_per_removal"`
	CPUSPerEndpoint     float64 `json:"cpu_s_per_endpoint"`
	IdleCPUPct          float64 `json:"idle_cpu_pct"`
	RSSMiB              float64 `json:"rss_mib"`
	JoinCPUS            float64 `json:"join_cpu_s"`
	SimulatorJoinCPUS   float64 `json:"simulator_join_cpu_s"`
	SimulatorRSSMiB     float64 `json:"simulator_rss_mib"`
	LoadAvg             float64 `json:"load_avg"`
	Converged           bool    `json:"converged"`
	ConvergenceMismatch int     `json:"convergence_mismatches"`
}

// run is one size's lab: the coordinator's fabricd, the simulator, the
// CLI on the admin host.
type run struct {
	o     options
	n     int
	out   io.Writer
	work  string
	f     *nshost.Fabric
	coord *nshost.Host
	pid   int // the coordinator's fabricd
	sim   *nshost.Process
	ctl   *controlClient
	// storeSpec names the coordinator's store for the simulator's check
	// (see openStore).
	storeSpec string
	eps       endpointsResp
}

func (r *run) printf(format string, args ...any) {
	fmt.Fprintf(r.out, "n=%d  "+format+"\n", append([]any{r.n}, args...)...)
}

func runSize(ctx context.Context, o options, n int, out io.Writer) (res result, err error) {
	r := &run{o: o, n: n, out: out}
	res = result{N: n, Store: o.store, WGEndpoints: o.wgEndpoints}
	if r.work = o.workDir; r.work != "" {
		r.work = filepath.Join(r.work, fmt.Sprintf("n%d", n))
		if err := os.RemoveAll(r.work); err != nil {
			return res, err
		}
		if err := os.MkdirAll(r.work, 0o755); err != nil {
			return res, err
		}
	} else {
		if r.work, err = os.MkdirTemp("", "fabric-scale-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(r.work)
	}
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: r.work, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return res, err
	}
	defer lab.Close()
	restore, note, err := raiseBacklog(max(1000, 3*n))
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, restore()) }()
	if note != "" {
		r.printf("%s", note)
	}
	if err := r.setUp(ctx, lab); err != nil {
		return res, err
	}
	if err := r.join(ctx, &res); err != nil {
		return res, err
	}
	if err := r.measureIdle(ctx, &res); err != nil {
		return res, err
	}
	if err := r.measureChanges(ctx, &res); err != nil {
		return res, err
	}
	if err := r.verify(ctx, &res); err != nil {
		return res, err
	}
	return res, nil
}

// setUp starts the coordinator's fabricd and the simulator with n nodes
// and as many spares as joins to measure.
func (r *run) setUp(ctx context.Context, lab *nshost.Lab) error {
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: r.o.binDir, VPNCIDR: vpnCIDR})
	if err != nil {
		return err
	}
	r.f = f
	var opts func(int) nshost.PeerOptions
	if r.o.store == "etcd" {
		members, err := lab.AddHosts(ctx, 3, func(i int) string { return fmt.Sprintf("etcd%d", i+1) })
		if err != nil {
			return err
		}
		ec, err := nshost.StartEtcd(ctx, members)
		if err != nil {
			return err
		}
		url := ec.URL("fabric")
		r.storeSpec = url
		opts = func(int) nshost.PeerOptions { return nshost.PeerOptions{Store: url} }
		r.printf("etcd members %s", strings.Join(ec.Endpoints(), ", "))
	}
	hosts, err := f.AddPeers(ctx, 1, func(int) string { return "coord" }, opts)
	if err != nil {
		return err
	}
	if r.storeSpec == "" {
		r.storeSpec = "bolt:" + filepath.Join(f.StateDir(hosts[0]), "fabric.db")
	}
	r.coord, r.pid = hosts[0], f.Daemon(hosts[0]).PID()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	socket := filepath.Join(r.coord.Dir(), "simulator.sock")
	r.sim, err = r.coord.Start(exe, "simulate", "--control", socket, "--nodes", strconv.Itoa(r.n+r.o.changes),
		"--bootstrap-key-file", f.KeyFile, "--wg-endpoints="+strconv.FormatBool(r.o.wgEndpoints))
	if err != nil {
		return err
	}
	r.ctl = newControlClient(socket)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err = r.ctl.call(ctx, "GET", "/endpoints", nil, &r.eps)
		if err == nil {
			break
		}
		select {
		case <-r.sim.Exited():
			return fmt.Errorf("the simulator exited: %v (log %s)", r.sim.Err(), r.sim.LogPath())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the simulator does not answer: %w (log %s)", err, r.sim.LogPath())
		}
	}
	r.printf("coordinator fabricd pid %d on %s (%s), simulator pid %d with %d nodes (log %s)",
		r.pid, r.coord.Name(), f.Endpoint(r.coord), r.sim.PID(), len(r.eps.Endpoints), r.sim.LogPath())
	return nil
}

// join activates the coordinator with the first nodes and adds the others
// with concurrent add-nodes, at most core.MaxNodesPerActivation per
// request, and waits until every node is active, registered, has its
// pastiche recorded and holds every peer and every slice.
func (r *run) join(ctx context.Context, res *result) error {
	eps := r.eps.Endpoints[:r.n]
	var chunks [][]string
	for len(eps) > 0 {
		k := min(len(eps), core.MaxNodesPerActivation)
		chunks = append(chunks, eps[:k])
		eps = eps[k:]
	}
	timeout := r.o.timeout
	if timeout <= 0 {
		timeout = time.Minute + time.Duration(r.n)*30*time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stopPerf := r.perf(ctx, "join")
	defer stopPerf()
	cpu0, err := nshost.CPUTime(r.pid)
	if err != nil {
		return err
	}
	simCPU0, err := nshost.CPUTime(r.sim.PID())
	if err != nil {
		return err
	}
	start := time.Now()
	// A node whose activation failed for a reason that may pass (it
	// answered too late on a loaded machine) makes the CLI exit 1; the
	// coordinator retries it on its own, and the join waits for it.
	if _, err := r.cli(ctx, "activate", "--coordinator", r.f.Endpoint(r.coord), "--nodes", strings.Join(chunks[0], ","),
		"--bootstrap-key-file", r.f.KeyFile, "--vpn-cidr", vpnCIDR, "--admin-dir", r.f.AdminDir); err != nil {
		if _, statErr := os.Stat(filepath.Join(r.f.AdminDir, "admin.json")); statErr != nil {
			return err // no cluster
		}
		r.printf("%v", err)
	}
	errs := make(chan error, len(chunks))
	for _, c := range chunks[1:] {
		go func() {
			_, err := r.cli(ctx, "add-nodes", "--nodes", strings.Join(c, ","), "--admin-dir", r.f.AdminDir)
			errs <- err
		}()
	}
	for range chunks[1:] {
		if err := <-errs; err != nil {
			r.printf("%v", err)
		}
	}
	activated := time.Since(start)
	st, err := r.waitConverged(ctx, r.n)
	if err != nil {
		return err
	}
	res.JoinS = round(time.Since(start).Seconds())
	cpu1, err := nshost.CPUTime(r.pid)
	if err != nil {
		return err
	}
	res.JoinCPUS = round((cpu1 - cpu0).Seconds())
	if simCPU1, err := nshost.CPUTime(r.sim.PID()); err == nil {
		res.SimulatorJoinCPUS = round((simCPU1 - simCPU0).Seconds())
	}
	r.printf("%d nodes joined in %.1f s (all activated after %.1f s); CPU: coordinator %.1f s, simulator %.1f s; revision %d; %.1f answers and %.0f KiB per node",
		st.Joined, res.JoinS, activated.Seconds(), res.JoinCPUS, res.SimulatorJoinCPUS, st.MaxRev, float64(st.Messages)/float64(r.n), float64(st.Bytes)/float64(r.n)/1024)
	if r.o.workDir != "" {
		// The change log of the join, for a closer look.
		if out, err := r.cli(ctx, "events", "-o", "json", "--admin-dir", r.f.AdminDir); err == nil {
			_ = os.WriteFile(filepath.Join(r.work, "join-events.json"), []byte(out), 0o644)
		}
	}
	return nil
}

// waitConverged waits until want nodes joined and every joined node holds
// what it should.
func (r *run) waitConverged(ctx context.Context, want int) (statusResp, error) {
	var st statusResp
	for {
		err := r.ctl.call(ctx, "GET", "/status?extraPeers=2", nil, &st)
		if err == nil && st.Joined == want && st.Converged == want {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("waiting for %d nodes to join: %d activated, %d joined, %d watching, %d hold every peer and slice: %w (errors: %s)",
				want, st.Activated, st.Joined, st.Watching, st.Converged, ctx.Err(), strings.Join(st.Errors, "; "))
		case <-r.sim.Exited():
			return st, fmt.Errorf("the simulator exited: %v (log %s)", r.sim.Err(), r.sim.LogPath())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// measureIdle measures the coordinator's CPU and memory with every node
// connected and nothing changing.
func (r *run) measureIdle(ctx context.Context, res *result) error {
	if !sleep(ctx, r.o.settle) {
		return ctx.Err()
	}
	stopPerf := r.perf(ctx, "idle")
	cpu0, err := nshost.CPUTime(r.pid)
	if err != nil {
		return err
	}
	if !sleep(ctx, r.o.idle) {
		return ctx.Err()
	}
	cpu1, err := nshost.CPUTime(r.pid)
	if err != nil {
		return err
	}
	stopPerf()
	rss, err := nshost.RSS(r.pid)
	if err != nil {
		return err
	}
	simRSS, err := nshost.RSS(r.sim.PID())
	if err != nil {
		return err
	}
	res.IdleCPUPct = round(100 * (cpu1 - cpu0).Seconds() / r.o.idle.Seconds())
	res.RSSMiB = round(float64(rss) / (1 << 20))
	res.SimulatorRSSMiB = round(float64(simRSS) / (1 << 20))
	res.LoadAvg = loadAvg()
	r.printf("idle with %d nodes watching: coordinator CPU %.2f %% of a core over %v, RSS %.0f MiB (simulator %.0f MiB); load average %.2f",
		r.n, res.IdleCPUPct, r.o.idle, res.RSSMiB, res.SimulatorRSSMiB, res.LoadAvg)
	return nil
}

// perf records a perf profile of the coordinator into the work directory
// until the returned function is called (nothing without --perf).
func (r *run) perf(ctx context.Context, name string) (stop func()) {
	if !r.o.perf {
		return func() {}
	}
	path := filepath.Join(r.work, "perf-"+name+".data")
	p, err := startProcess(ctx, "perf", "record", "-F", "499", "-g", "-p", strconv.Itoa(r.pid), "-o", path)
	if err != nil {
		r.printf("perf %s: %v", name, err)
		return func() {}
	}
	return func() {
		_ = p.Process.Signal(syscall.SIGINT)
		_ = p.Wait()
		r.printf("perf profile of the coordinator (%s): %s", name, path)
	}
}

// change is one measured change.
type change struct {
	kind    string
	lat     []float64 // ms from the commit to each node applying the peer change
	slices  []float64 // joins: ms to each node of the horde applying the new slice
	bytes   []int64
	cpu     time.Duration
	missing int
}

// measureChanges measures joins, WireGuard endpoint changes and removals,
// one at a time.
func (r *run) measureChanges(ctx context.Context, res *result) error {
	stopPerf := r.perf(ctx, "changes")
	defer stopPerf()
	var joins, endpoints, removals []change
	for k := range r.o.changes {
		c, err := r.measureJoin(ctx, r.n+k)
		if err != nil {
			return fmt.Errorf("join %d: %w", k+1, err)
		}
		joins = append(joins, c)
		c, err = r.measureEndpoint(ctx, (7*k+3)%r.n, k)
		if err != nil {
			return fmt.Errorf("endpoint change %d: %w", k+1, err)
		}
		endpoints = append(endpoints, c)
		c, err = r.measureRemoval(ctx, (11*k+5)%r.n)
		if err != nil {
			return fmt.Errorf("removal %d: %w", k+1, err)
		}
		removals = append(removals, c)
	}
	res.LoadAvg = round((res.LoadAvg + loadAvg()) / 2)
	lat, bytes, cpu := pool(joins)
	res.PropagationP50Ms, res.PropagationP99Ms, res.PropagationMaxMs = pct(lat, 50), pct(lat, 99), pct(lat, 100)
	res.BytesPerNode, res.CPUSPerJoin = mean(bytes), cpu
	var sl []float64
	for _, c := range joins {
		sl = append(sl, c.slices...)
	}
	res.ServicesP99Ms = pct(sl, 99)
	lat, bytes, cpu = pool(endpoints)
	res.EndpointP50Ms, res.EndpointP99Ms, res.EndpointMaxMs = pct(lat, 50), pct(lat, 99), pct(lat, 100)
	res.EndpointBytes, res.CPUSPerEndpoint = mean(bytes), cpu
	lat, bytes, cpu = pool(removals)
	res.RemovalP50Ms, res.RemovalP99Ms, res.RemovalMaxMs = pct(lat, 50), pct(lat, 99), pct(lat, 100)
	res.RemovalBytes, res.CPUSPerRemoval = mean(bytes), cpu
	res.CPUSPerChange = round((res.CPUSPerJoin + res.CPUSPerEndpoint + res.CPUSPerRemoval) / 3)
	r.printf("join:     peer to every node p50 %.0f ms p99 %.0f ms max %.0f ms, pastiche to its horde p99 %.0f ms; %.0f B per node; coordinator CPU %.3f s per join (all its rounds)",
		res.PropagationP50Ms, res.PropagationP99Ms, res.PropagationMaxMs, res.ServicesP99Ms, res.BytesPerNode, res.CPUSPerJoin)
	r.printf("endpoint: p50 %.0f ms p99 %.0f ms max %.0f ms; %.0f B per node; coordinator CPU %.3f s per change",
		res.EndpointP50Ms, res.EndpointP99Ms, res.EndpointMaxMs, res.EndpointBytes, res.CPUSPerEndpoint)
	r.printf("removal:  p50 %.0f ms p99 %.0f ms max %.0f ms; %.0f B per node; coordinator CPU %.3f s per removal",
		res.RemovalP50Ms, res.RemovalP99Ms, res.RemovalMaxMs, res.RemovalBytes, res.CPUSPerRemoval)
	return nil
}

// pool merges the changes' samples; cpu is the mean CPU per change.
func pool(cs []change) (lat []float64, bytes []int64, cpu float64) {
	for _, c := range cs {
		lat = append(lat, c.lat...)
		bytes = append(bytes, c.bytes...)
		cpu += c.cpu.Seconds()
	}
	return lat, bytes, round(cpu / float64(len(cs)))
}

// timed runs trigger with node index probed, waits until every other node
// applied the change, and times it from the commit of the event of kind
// eventKind for that node.
func (r *run) timed(ctx context.Context, kind string, index int, eventKind string, slice bool, trigger func() error) (change, error) {
	c := change{kind: kind}
	var pr probeResp
	if err := r.ctl.call(ctx, "POST", "/probe", probeReq{Index: index}, &pr); err != nil {
		return c, err
	}
	cpu0, err := nshost.CPUTime(r.pid)
	if err != nil {
		return c, err
	}
	if err := trigger(); err != nil {
		return c, err
	}
	var w probeWaitResp
	if err := r.ctl.call(ctx, "POST", "/probe/wait", probeWaitReq{Slice: slice, Timeout: time.Minute}, &w); err != nil {
		return c, err
	}
	cpu1, err := nshost.CPUTime(r.pid)
	if err != nil {
		return c, err
	}
	c.cpu, c.missing = cpu1-cpu0, w.Missing+w.MissingSlice
	if c.missing > 0 {
		return c, fmt.Errorf("%d nodes did not apply the peer change and %d not the slice within a minute", w.Missing, w.MissingSlice)
	}
	times, err := r.eventTimes(ctx, pr.MaxRev, r.eps.Names[index])
	if err != nil {
		return c, err
	}
	at, ok := times[eventKind]
	if !ok {
		return c, fmt.Errorf("no %s event for %s after revision %d", eventKind, r.eps.Names[index], pr.MaxRev)
	}
	for _, t := range w.PeerAt {
		c.lat = append(c.lat, float64(t-at.UnixNano())/1e6)
	}
	if slice {
		// The new node's pastiche reaches its horde from the commit of
		// its services, after its registration.
		at, ok := times["services"]
		if !ok {
			return c, fmt.Errorf("no services event for %s after revision %d", r.eps.Names[index], pr.MaxRev)
		}
		for _, t := range w.SliceAt {
			c.slices = append(c.slices, float64(t-at.UnixNano())/1e6)
		}
	}
	c.bytes = w.PeerBytes
	r.printf("%-8s %s: %d nodes applied it, p50 %.0f ms p99 %.0f ms max %.0f ms, %.0f B per node, coordinator CPU %.3f s",
		kind, r.eps.Names[index], len(c.lat), pct(c.lat, 50), pct(c.lat, 99), pct(c.lat, 100), mean(c.bytes), c.cpu.Seconds())
	return c, nil
}

func (r *run) measureJoin(ctx context.Context, index int) (change, error) {
	return r.timed(ctx, "join", index, "activated", true, func() error {
		_, err := r.cli(ctx, "add-nodes", "--nodes", r.eps.Endpoints[index], "--admin-dir", r.f.AdminDir)
		return err
	})
}

func (r *run) measureEndpoint(ctx context.Context, index, k int) (change, error) {
	ep := fmt.Sprintf("%s:%d", strings.Split(r.eps.Endpoints[index], ":")[0], wgPort+1+k)
	return r.timed(ctx, "endpoint", index, "endpoint", false, func() error {
		var out endpointResp
		return r.ctl.call(ctx, "POST", "/endpoint", endpointReq{Index: index, Endpoint: ep}, &out)
	})
}

func (r *run) measureRemoval(ctx context.Context, index int) (change, error) {
	return r.timed(ctx, "removal", index, "removed", false, func() error {
		_, err := r.cli(ctx, "nodes", "remove", r.eps.Names[index], "--yes", "--admin-dir", r.f.AdminDir)
		return err
	})
}

// eventTimes is when each change of node after revision since was
// committed, by kind of event (the first of each), from `fabric events`.
func (r *run) eventTimes(ctx context.Context, since uint64, node string) (map[string]time.Time, error) {
	out, err := r.cli(ctx, "events", "--since", strconv.FormatUint(since, 10), "-o", "json", "--admin-dir", r.f.AdminDir)
	if err != nil {
		return nil, err
	}
	times := map[string]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e clusterstatus.Event
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Node != node {
			continue
		}
		if _, seen := times[e.Kind]; seen {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, e.At)
		if err != nil {
			return nil, fmt.Errorf("event time %q: %w", e.At, err)
		}
		times[e.Kind] = at
	}
	return times, sc.Err()
}

// verify waits until every node holds what it should, stops the
// coordinator and compares every node's state with the coordinator's
// records.
func (r *run) verify(ctx context.Context, res *result) error {
	var st statusResp
	if err := r.ctl.call(ctx, "GET", "/status?extraPeers=2", nil, &st); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := r.waitConverged(wctx, st.Joined); err != nil {
		r.printf("not every node holds what it should: %v", err)
	}
	if err := r.f.StopFabricd(ctx, r.coord); err != nil {
		return err
	}
	var v verifyResp
	if err := r.ctl.call(ctx, "POST", "/verify", verifyReq{Store: r.storeSpec}, &v); err != nil {
		return err
	}
	res.Converged, res.ConvergenceMismatch = v.Converged, v.Mismatches
	r.printf("converged: %v (%d nodes compared with the coordinator's from-scratch answers in %.1f s, %d differ) %s",
		v.Converged, v.Nodes, v.Took, v.Mismatches, strings.Join(v.Examples, "; "))
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// loadAvg is the machine's load average over the last minute.
func loadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, err := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	if err != nil {
		return -1
	}
	return f
}

// cli runs the fabric CLI on the admin host; its error names the command
// and holds the end of its output (the lists of endpoints are long).
func (r *run) cli(ctx context.Context, args ...string) (string, error) {
	out, err := r.f.CLI(ctx, args...)
	if err != nil {
		why := "failed"
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			why = exit.String()
		}
		return out, fmt.Errorf("fabric %s: %s: %s", args[0], why, summary(out))
	}
	return out, nil
}

// summary is the CLI's output without its lines of nodes activated, each
// line cut short (they may list a thousand endpoints).
func summary(out string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "ok ") {
			continue
		}
		if len(l) > 300 {
			l = l[:300] + "..."
		}
		lines = append(lines, l)
	}
	return tail(strings.Join(lines, "\n"))
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// pct is the p-th percentile of values (100: the maximum), rounded.
func pct(values []float64, p float64) float64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Sorted(slices.Values(values))
	i := int(float64(len(v))*p/100+0.5) - 1
	return round(v[min(max(i, 0), len(v)-1)])
}

func mean(values []int64) float64 {
	if len(values) == 0 {
		return 0
	}
	var sum int64
	for _, v := range values {
		sum += v
	}
	return round(float64(sum) / float64(len(values)))
}

func round(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// startProcess starts a helper program of the driver (perf).
func startProcess(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}
