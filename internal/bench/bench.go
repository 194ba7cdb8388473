// Package bench is fabric-bench, the load program of `make bench`: it
// measures how long a cluster takes from `fabric activate` to a full mesh,
// on namespace hosts with real WireGuard (internal/nshost) and in-process
// with fake networks (internal/inproc), prints each figure as it goes and
// ends with one JSON line of all of them.
package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fabricmesh/fabric/internal/inproc"
	"github.com/fabricmesh/fabric/internal/nshost"
)

// Main runs the benchmarks and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fabric-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	binDir := fs.String("bin-dir", "bin", "directory holding fabric, fabricd and wireguard-go")
	runs := fs.Int("runs", 3, "repetitions of each scenario (the median is reported)")
	inprocNodes := fs.Int("inproc-nodes", 200, "nodes of the in-process scenario")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b := &bench{out: stdout, runs: *runs, figures: map[string]any{}}
	abs, err := filepath.Abs(*binDir)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := nshost.Check(); err != nil {
		fmt.Fprintf(stdout, "namespace-host scenarios skipped: %v\n", err)
	} else {
		for _, n := range []int{5, 20} {
			b.measure(fmt.Sprintf("activate_to_mesh_%d_hosts_s", n), func() (time.Duration, error) {
				return meshTime(ctx, abs, n)
			})
		}
	}
	b.measure(fmt.Sprintf("activate_to_converged_%d_inproc_nodes_s", *inprocNodes), func() (time.Duration, error) {
		return inprocTime(ctx, *inprocNodes)
	})
	line, _ := json.Marshal(b.figures)
	fmt.Fprintln(stdout, string(line))
	if b.failed {
		return 1
	}
	return 0
}

type bench struct {
	out     io.Writer
	runs    int
	figures map[string]any
	failed  bool
}

// measure runs fn b.runs times and records the median, in seconds.
func (b *bench) measure(name string, fn func() (time.Duration, error)) {
	var ds []time.Duration
	for i := range b.runs {
		d, err := fn()
		if err != nil {
			fmt.Fprintf(b.out, "%s run %d: FAILED: %v\n", name, i+1, err)
			b.failed = true
			return
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	med := ds[len(ds)/2]
	fmt.Fprintf(b.out, "%-44s median %6.3fs  (min %.3fs, max %.3fs, %d runs)\n", name, med.Seconds(), ds[0].Seconds(), ds[len(ds)-1].Seconds(), len(ds))
	b.figures[name] = round(med.Seconds())
}

func round(s float64) float64 { return float64(int64(s*1000+0.5)) / 1000 }

// meshTime makes n namespace hosts running fabricd and times `fabric
// activate` until `fabric watch` reports convergence and every host pings
// every VPN IP through WireGuard.
func meshTime(ctx context.Context, binDir string, n int) (time.Duration, error) {
	work, err := os.MkdirTemp("", "fabric-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return 0, err
	}
	defer lab.Close()
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir, LogLevel: "warn"})
	if err != nil {
		return 0, err
	}
	hosts, err := f.AddPeers(ctx, n, nil, nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if out, err := f.Activate(ctx, hosts[0], hosts[1:]); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	if out, err := f.Watch(ctx, n, 2*time.Minute); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	if err := f.CheckMesh(ctx, hosts); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// inprocTime starts a coordinator and n in-process nodes with fake networks
// and times `fabric activate` until every node has applied the latest
// revision.
func inprocTime(ctx context.Context, n int) (time.Duration, error) {
	work, err := os.MkdirTemp("", "fabric-bench-inproc-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := inproc.New(work, nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var peers []*inproc.Peer
	for i := range n + 1 {
		p, err := c.AddPeer(ctx, fmt.Sprintf("p%d", i), "sharks")
		if err != nil {
			return 0, err
		}
		peers = append(peers, p)
	}
	start := time.Now()
	if out, err := c.Activate(ctx, peers[0], peers[1:], "203.0.113.0/24"); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	if out, err := c.Watch(ctx, n+1, 2*time.Minute); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	return time.Since(start), nil
}
