package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/fabricmesh/fabric/testbed/inproc"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

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
	// A TEST-NET /24 holds 254 peers; more take a /16 of RFC 2544's
	// benchmarking range (in-process: the addresses go nowhere).
	cidr := "203.0.113.0/24"
	if n+2 > 254 {
		cidr = "198.18.0.0/16"
	}
	if out, err := c.Activate(ctx, peers[0], peers[1:], cidr); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	if out, err := c.Watch(ctx, n+1, 2*time.Minute); err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	return time.Since(start), nil
}

// mesh times activation to a full mesh on 5 and 20 namespace hosts.
func (b *bench) mesh(ctx context.Context, o options, nsErr error) {
	if nsErr != nil {
		b.skip("mesh: namespace-host scenarios", nsErr)
		return
	}
	for _, n := range []int{5, 20} {
		b.measure(fmt.Sprintf("activate_to_mesh_%d_hosts_s", n), func() (time.Duration, error) {
			return meshTime(ctx, o.binDir, n)
		})
	}
}
