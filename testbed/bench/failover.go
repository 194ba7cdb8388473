package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// failoverPhase bounds the random wait before each kill: the watches'
// keepalives (15 s) and pings (10 s) are in step across the nodes, so the
// kill falls at a random point of their cycle.
const failoverPhase = 15 * time.Second

// failover measures how long the nodes take to fail over between two
// coordinators on a three-member etcd: from the SIGKILL of the coordinator
// they watch until each watches the other (as the other's status says,
// polled every 100 ms), and until every node does. Each run kills the
// coordinators in turn, o.failoverKills times, restarting the killed one
// before the next kill.
func (b *bench) failover(ctx context.Context, o options, nsErr error) {
	if nsErr != nil {
		b.skip("failover: namespace-host scenario", nsErr)
		return
	}
	var perNode, all []float64
	for run := range b.runs {
		n, a, err := failoverRun(ctx, o)
		if err != nil {
			b.fail(fmt.Sprintf("failover run %d", run+1), err)
			return
		}
		perNode, all = append(perNode, n...), append(all, a...)
	}
	fmt.Fprintf(b.out, "failover: %d kills of a coordinator watched by %d nodes, %d node failovers\n", len(all), o.failoverNodes, len(perNode))
	b.percentiles("failover_node", "s from the SIGKILL to a node watching the other coordinator", perNode)
	b.percentiles("failover_all_nodes", "s from the SIGKILL to every node watching the other coordinator", all)
}

// percentiles prints and records the p50, p99 and max of values (in
// seconds) as name_p50_s, name_p99_s and name_max_s.
func (b *bench) percentiles(name, what string, values []float64) {
	vs := slices.Sorted(slices.Values(values))
	for _, p := range []struct {
		label string
		q     float64
	}{{"p50", 0.50}, {"p99", 0.99}, {"max", 1}} {
		v := percentile(vs, p.q)
		fmt.Fprintf(b.out, "%-44s %12.3f %s (%s of %d)\n", name+"_"+p.label+"_s", v, what, p.label, len(vs))
		b.figures[name+"_"+p.label+"_s"] = round(v)
	}
}

// percentile is the q-quantile of sorted values, nearest rank.
func percentile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// failoverRun makes one cluster and kills its coordinators in turn. It
// returns each node's failover time and, per kill, the slowest node's.
func failoverRun(ctx context.Context, o options) (perNode, all []float64, err error) {
	work, err := os.MkdirTemp("", "fabric-bench-failover-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(work)
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return nil, nil, err
	}
	defer lab.Close()
	ha, err := nshost.NewHA(ctx, lab, nshost.HAConfig{
		Fabric: nshost.FabricConfig{BinDir: o.binDir, LogLevel: "warn"}, Etcd: 3, Coordinators: 2, Nodes: o.failoverNodes,
	})
	if err != nil {
		return nil, nil, err
	}
	if out, err := ha.Activate(ctx); err != nil {
		return nil, nil, fmt.Errorf("%w: %s", err, out)
	}
	victim, other := ha.Coordinators[0], ha.Coordinators[1]
	for range o.failoverKills {
		if _, err := ha.WaitStatus(ctx, time.Minute, func(st clusterstatus.Status) error {
			if p, _ := nshost.PeerByName(st, other.Name()); !p.Online || p.AppliedRevision != st.Revision {
				return fmt.Errorf("%s is not online at revision %d", other.Name(), st.Revision)
			}
			return nshost.NodesWatching(st, victim.Name())
		}); err != nil {
			return nil, nil, fmt.Errorf("before killing %s: %w", victim.Name(), err)
		}
		select {
		case <-time.After(rand.N(failoverPhase)):
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		times, err := killAndTime(ctx, ha, victim, other)
		if err != nil {
			return nil, nil, err
		}
		perNode = append(perNode, times...)
		all = append(all, slices.Max(times))
		if err := ha.StartFabricd(ctx, victim); err != nil {
			return nil, nil, err
		}
		victim, other = other, victim
	}
	return perNode, all, nil
}

// killAndTime SIGKILLs victim's fabricd and returns, for each node, the
// seconds until the status shows it watching survivor.
func killAndTime(ctx context.Context, ha *nshost.HA, victim, survivor *nshost.Host) ([]float64, error) {
	fabricd := ha.Daemon(victim)
	killed := time.Now()
	if err := fabricd.Kill(); err != nil {
		return nil, err
	}
	at := map[string]float64{}
	_, err := ha.WaitStatus(ctx, 2*time.Minute, func(st clusterstatus.Status) error {
		for _, p := range st.Peers {
			if _, seen := at[p.Name]; !seen && p.Role == "node" && p.Watching == survivor.Name() {
				at[p.Name] = time.Since(killed).Seconds()
			}
		}
		if len(at) < len(ha.Nodes) {
			return fmt.Errorf("%d of %d nodes watch %s", len(at), len(ha.Nodes), survivor.Name())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("after killing %s: %w", victim.Name(), err)
	}
	var out []float64
	for _, s := range at {
		out = append(out, s)
	}
	return out, nil
}
