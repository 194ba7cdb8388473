package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// Names of the pastiche scenario's hosts (and of their peers).
const (
	coordinatorName = "coordinator"
	sourceName      = "source"
	targetName      = "target"
)

// freeFactor is how many times the file's size must be free before the
// pastiche scenario starts: the file, its copy on the target, and room.
const freeFactor = 4

// pastiche compares `fabric pastiche send` of a file of o.pasticheMiB MiB
// with iperf3 over the same WireGuard tunnel, in one cluster of a
// coordinator and two nodes, b.runs times.
func (b *bench) pastiche(ctx context.Context, o options, nsErr error) {
	if nsErr != nil {
		b.skip("pastiche: namespace-host scenario", nsErr)
		return
	}
	size := int64(o.pasticheMiB) << 20
	work, err := os.MkdirTemp("", "fabric-bench-pastiche-")
	if err != nil {
		b.fail("pastiche", err)
		return
	}
	defer os.RemoveAll(work)
	if free, err := freeBytes(work); err != nil {
		b.fail("pastiche", err)
		return
	} else if free < freeFactor*size {
		b.skip("pastiche", fmt.Errorf("needs %d MiB free in %s, has %d MiB", freeFactor*size>>20, work, free>>20))
		return
	}
	res, err := pasticheRuns(ctx, o, work, b.runs)
	if err != nil {
		b.fail("pastiche", err)
		return
	}
	b.reportPastiche(o.pasticheMiB, res)
}

// pasticheResults are the MB/s (10^6 bytes per second) of each run.
type pasticheResults struct {
	iperf3, viaNode, viaCoordinator []float64
}

func (b *bench) reportPastiche(mib int, r pasticheResults) {
	label := fmt.Sprintf("%dmib", mib)
	if mib == 1024 {
		label = "1gib"
	}
	b.record("iperf3_wg_mb_per_s", "MB/s (iperf3 TCP, source -> target through WireGuard)", r.iperf3)
	b.record("pastiche_"+label+"_mb_per_s", "MB/s (admin -> coordinator -> source -> target)", r.viaNode)
	b.ratio("pastiche_vs_iperf3_ratio", median(r.viaNode), median(r.iperf3), "pastiche/iperf3")
	b.record("pastiche_"+label+"_from_coordinator_mb_per_s", "MB/s (admin -> coordinator = source -> target)", r.viaCoordinator)
	b.ratio("pastiche_from_coordinator_vs_iperf3_ratio", median(r.viaCoordinator), median(r.iperf3), "pastiche from the coordinator/iperf3")
	fmt.Fprintf(b.out, "%-44s %s\n", "pastiche path:", "admin -(pubapi, TLS, underlay)-> coordinator relay -(signed stream, WireGuard)-> "+
		"source pastiche -(signed stream, WireGuard)-> target pastiche, which stores and fsyncs; MB = 10^6 bytes")
	fmt.Fprintf(b.out, "%-44s %s\n", "pastiche from the coordinator:", "the same with the coordinator's own pastiche as the source: "+
		"the relay's signed stream stays inside the coordinator, only source -> target crosses WireGuard "+
		"(the closest to a source -> target transfer without new product code)")
}

// pasticheRuns makes the cluster and the file, then measures runs times.
func pasticheRuns(ctx context.Context, o options, work string, runs int) (pasticheResults, error) {
	var res pasticheResults
	c, err := newPasticheCluster(ctx, o.binDir, work)
	if err != nil {
		return res, err
	}
	defer c.close()
	file := filepath.Join(c.f.Admin.Dir(), fmt.Sprintf("bench-%dmib.bin", o.pasticheMiB))
	sum, err := writeBenchFile(file, int64(o.pasticheMiB)<<20)
	if err != nil {
		return res, err
	}
	defer os.Remove(file)
	size := int64(o.pasticheMiB) << 20
	for i := range runs {
		ip, err := c.iperf3(ctx, o.iperfTime)
		if err != nil {
			return res, fmt.Errorf("iperf3 run %d: %w", i+1, err)
		}
		node, err := c.send(ctx, sourceName, file, size, sum, i)
		if err != nil {
			return res, fmt.Errorf("pastiche run %d: %w", i+1, err)
		}
		coord, err := c.send(ctx, coordinatorName, file, size, sum, i)
		if err != nil {
			return res, fmt.Errorf("pastiche run %d from the coordinator: %w", i+1, err)
		}
		res.iperf3 = append(res.iperf3, ip)
		res.viaNode = append(res.viaNode, node)
		res.viaCoordinator = append(res.viaCoordinator, coord)
	}
	return res, nil
}

// pasticheCluster is a coordinator and two nodes (source, target) of the
// default horde, with pastiche running on each.
type pasticheCluster struct {
	lab            *nshost.Lab
	f              *nshost.Fabric
	source, target *nshost.Host
	targetVPNIP    string
}

func newPasticheCluster(ctx context.Context, binDir, work string) (*pasticheCluster, error) {
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return nil, err
	}
	c := &pasticheCluster{lab: lab}
	if err := c.start(ctx, binDir); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *pasticheCluster) start(ctx context.Context, binDir string) error {
	var err error
	c.f, err = nshost.NewFabric(ctx, c.lab, nshost.FabricConfig{BinDir: binDir, LogLevel: "warn"})
	if err != nil {
		return err
	}
	names := []string{coordinatorName, sourceName, targetName}
	hosts, err := c.f.AddPeers(ctx, len(names), func(i int) string { return names[i] }, nil)
	if err != nil {
		return err
	}
	c.source, c.target = hosts[1], hosts[2]
	if out, err := c.f.Activate(ctx, hosts[0], hosts[1:]); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	if out, err := c.f.Watch(ctx, len(hosts), 2*time.Minute, "pastiche"); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	st, err := c.f.Status(ctx)
	if err != nil {
		return err
	}
	c.targetVPNIP, err = vpnIP(st, targetName)
	return err
}

func (c *pasticheCluster) close() {
	_ = c.lab.Close()
}

func vpnIP(st clusterstatus.Status, name string) (string, error) {
	for _, p := range st.Peers {
		if p.Name == name && p.VPNIP != "" {
			return p.VPNIP, nil
		}
	}
	return "", fmt.Errorf("no VPN IP for peer %s in the status", name)
}

// send runs `fabric pastiche send` of file from peer from to the target,
// checks the SHA-256 the target verified and the stored file, deletes it,
// and returns the throughput in MB/s.
func (c *pasticheCluster) send(ctx context.Context, from, file string, size int64, sum string, run int) (float64, error) {
	name := fmt.Sprintf("bench-%s-%d.bin", from, run)
	stored := filepath.Join(c.target.Dir(), "state", "pastiche", name)
	defer os.Remove(stored)
	start := time.Now()
	out, err := c.f.CLI(ctx, "pastiche", "send", "--from", from, "--to", targetName, "--name", name,
		"--admin-dir", c.f.AdminDir, file)
	elapsed := time.Since(start)
	if err != nil {
		return 0, err
	}
	if got := verifiedSum(out); got != sum {
		return 0, fmt.Errorf("the target verified SHA-256 %q, the file has %s: %s", got, sum, out)
	}
	if route := fmt.Sprintf("pastiche@%s -> pastiche@%s", from, targetName); !strings.Contains(out, route) {
		return 0, fmt.Errorf("fabric pastiche send did not report %q: %s", route, out)
	}
	info, err := os.Stat(stored)
	if err != nil {
		return 0, fmt.Errorf("the target's copy: %w", err)
	}
	if info.Size() != size {
		return 0, fmt.Errorf("the target stored %d bytes, want %d", info.Size(), size)
	}
	return float64(size) / elapsed.Seconds() / 1e6, nil
}

// verifiedSum finds the digest in send's line "sha256 verified by X: <hex>".
func verifiedSum(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "sha256 verified by ") {
			if i := strings.LastIndex(line, ": "); i >= 0 {
				return strings.TrimSpace(line[i+2:])
			}
		}
	}
	return ""
}

// iperf3Port is iperf3's default port, inside the target's namespace.
const iperf3Port = 5201

// iperf3 runs a one-shot iperf3 server on the target's VPN IP and a client
// on the source for d, and returns the MB/s the server received.
func (c *pasticheCluster) iperf3(ctx context.Context, d time.Duration) (float64, error) {
	return iperf3Between(ctx, c.source, c.target, c.targetVPNIP, d)
}

// waitTCPListen polls ss on h until p listens on port (a probe connection
// would use up a one-shot iperf3 server).
func waitTCPListen(ctx context.Context, h *nshost.Host, p *nshost.Process, port int) error {
	timeout, interval := 10*time.Second, 50*time.Millisecond
	if h.IsVM() { // each probe is an ssh login
		timeout, interval = 2*time.Minute, time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		out, err := h.Run(ctx, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if err == nil && strings.TrimSpace(out) != "" {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited: %v (log %s)", p, p.Err(), p.LogPath())
		case <-ctx.Done():
			return fmt.Errorf("%s does not listen on port %d: %w (log %s)", p, port, ctx.Err(), p.LogPath())
		case <-time.After(interval):
		}
	}
}
