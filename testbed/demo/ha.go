package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// HA is the flow of `make ha-demo` (and of the root test that asserts it):
// a cluster whose two coordinators share its records in a three-member
// etcd, one coordinator killed with SIGKILL, changes made through the
// survivor while transfers go on, and the killed one restarted.
type HA struct {
	*nshost.HA
	// Out receives the progress; Step marks each step.
	Out  io.Writer
	Step func(format string, args ...any)

	// Killed and Survivor are the two coordinators, once Kill ran.
	Killed, Survivor *nshost.Host
	// KilledAt is when the SIGKILL was sent.
	KilledAt time.Time
	// Added and Removed are the nodes changed through the survivor.
	Added, Removed *nshost.Host

	removed   map[*nshost.Host]bool // every node removed (Remove)
	transfers *transferLoop
}

// haNodes is how many nodes the demo activates (one more is added later).
const haNodes = 6

// haDemo is make ha-demo.
func haDemo(ctx context.Context, out io.Writer, binDir string) (err error) {
	d := &demo{out: out, start: time.Now()}
	binDir, err = filepath.Abs(binDir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "fabric-ha-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d.step("making namespace hosts on a bridge (underlay 198.51.100.0/24): 3 etcd members, 2 coordinators, %d nodes and an admin host", haNodes)
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return err
	}
	defer func() {
		d.step("tearing down: stopping etcd and fabricd, deleting namespaces %s-*", lab.Prefix())
		err = errors.Join(err, lab.Close())
	}()
	h, err := NewHA(ctx, lab, binDir, haNodes, out, d.step)
	if err != nil {
		return err
	}
	return h.Run(ctx)
}

// NewHA starts the demo's cluster on lab: etcd on three hosts, fabricd on
// two coordinators (--store etcd://...) and on n nodes (one horde), and
// shows where everything runs.
func NewHA(ctx context.Context, lab *nshost.Lab, binDir string, n int, out io.Writer, step func(string, ...any)) (*HA, error) {
	if n < 5 {
		return nil, fmt.Errorf("the HA flow needs at least 5 nodes (two pairs send files, another is removed), not %d", n)
	}
	ha, err := nshost.NewHA(ctx, lab, nshost.HAConfig{
		Fabric: nshost.FabricConfig{BinDir: binDir}, Etcd: 3, Coordinators: 2, Nodes: n,
		NodeOptions: func(int) nshost.PeerOptions { return nshost.PeerOptions{Horde: "ha"} },
	})
	if err != nil {
		return nil, err
	}
	h := &HA{HA: ha, Out: out, Step: step, removed: map[*nshost.Host]bool{}}
	for i, m := range ha.Etcd.Members() {
		fmt.Fprintf(out, "  %-7s %s  etcd member, pid %d, client endpoint %s\n", ha.EtcdHosts[i].Name(), ha.EtcdHosts[i].IP(), m.PID(), m.ClientEndpoint())
	}
	for _, c := range ha.Coordinators {
		fmt.Fprintf(out, "  %-7s %s  fabricd pid %d, pubapi %s, --store %s\n", c.Name(), c.IP(), ha.Daemon(c).PID(), ha.Endpoint(c), ha.Store)
	}
	for _, x := range ha.Nodes {
		fmt.Fprintf(out, "  %-7s %s  fabricd pid %d, pubapi %s\n", x.Name(), x.IP(), ha.Daemon(x).PID(), ha.Endpoint(x))
	}
	return h, nil
}

func (h *HA) show(text string) { fmt.Fprint(h.Out, indent(text)) }

// Run is the whole flow after NewHA. The transfers end with it, also when
// a step fails.
func (h *HA) Run(ctx context.Context) error {
	defer func() {
		if h.transfers != nil {
			h.transfers.stop()
		}
	}()
	for _, step := range []func(context.Context) error{h.ActivateAll, h.Kill, h.ChangeThroughSurvivor, h.WaitFailover, h.CheckChanges, h.StopTransfers, h.Restart} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// ActivateAll activates the cluster through coord1, adds coord2, and shows
// the coordinators and the mesh.
func (h *HA) ActivateAll(ctx context.Context) error {
	c1, c2 := h.Coordinators[0], h.Coordinators[1]
	h.Step("fabric activate --coordinator %s --nodes <%d nodes>, then fabric coordinators add %s", h.Endpoint(c1), len(h.Nodes), h.Endpoint(c2))
	out, err := h.HA.Activate(ctx)
	h.show(out)
	if err != nil {
		return err
	}
	if err := h.coordinators(ctx, "fabric coordinators list: both coordinators serve; the nodes watch "+c1.Name(), func(st clusterstatus.Status) error {
		return nshost.NodesWatching(st, c1.Name())
	}); err != nil {
		return err
	}
	h.Step("proving the mesh: every host has every peer in wg show fabric0 and pings every VPN IP")
	if err := h.CheckMesh(ctx, append(h.Coordinators, h.Nodes...)); err != nil {
		return err
	}
	fmt.Fprintf(h.Out, "  %d hosts: every ping answered\n", len(h.Coordinators)+len(h.Nodes))
	return nil
}

// coordinators waits until cond accepts the status, then shows fabric
// coordinators list under title.
func (h *HA) coordinators(ctx context.Context, title string, cond func(clusterstatus.Status) error) error {
	h.Step("%s", title)
	if _, err := h.WaitStatus(ctx, time.Minute, cond); err != nil {
		return err
	}
	out, err := h.CLI(ctx, "coordinators", "list", "--admin-dir", h.AdminDir)
	h.show(out)
	return err
}

// Kill SIGKILLs coord1's fabricd and starts transfers between nodes that
// go on through the failover.
func (h *HA) Kill(context.Context) error {
	h.Killed, h.Survivor = h.Coordinators[0], h.Coordinators[1]
	p := h.Daemon(h.Killed)
	h.Step("kill -9 %d: fabricd on %s dies (its WireGuard interface with it), as if the machine had crashed", p.PID(), h.Killed.Name())
	h.KilledAt = time.Now()
	if err := p.Kill(); err != nil {
		return err
	}
	var err error
	if h.transfers, err = h.startTransfers(); err != nil {
		return err
	}
	fmt.Fprintf(h.Out, "  transfers start at once and go on: fabric pastiche send %s -> %s and %s -> %s, 1 MiB each, one after the other\n",
		h.Nodes[0].Name(), h.Nodes[1].Name(), h.Nodes[2].Name(), h.Nodes[3].Name())
	return nil
}

// WaitFailover waits until every node watches the survivor and applied
// the cluster's revision, and shows when each started watching it.
func (h *HA) WaitFailover(ctx context.Context) error {
	h.Step("waiting for every node to fail over: its watch of %s breaks (its kernel gets no answer to its probes), it watches %s from its applied revision and gets the changes", h.Killed.Name(), h.Survivor.Name())
	at := map[string]time.Duration{}
	st, err := h.WaitStatus(ctx, 2*time.Minute, func(st clusterstatus.Status) error {
		for _, p := range st.Peers {
			if _, seen := at[p.Name]; !seen && p.Role == "node" && p.Watching == h.Survivor.Name() {
				at[p.Name] = time.Since(h.KilledAt)
				fmt.Fprintf(h.Out, "  %-6s watches %s %5.1fs after the kill\n", p.Name, h.Survivor.Name(), at[p.Name].Seconds())
			}
		}
		return nshost.NodesWatching(st, h.Survivor.Name())
	})
	if err != nil {
		return err
	}
	var slowest time.Duration
	for _, d := range at {
		slowest = max(slowest, d)
	}
	fmt.Fprintf(h.Out, "  failover: every node watches %s and applied revision %d %.1fs after the SIGKILL of %s\n", h.Survivor.Name(), st.Revision, slowest.Seconds(), h.Killed.Name())
	return nil
}

// ChangeThroughSurvivor adds a node and removes another with the CLI,
// which fails over to the surviving coordinator, right after the kill:
// nodes still watching the dead one get the changes once they fail over.
func (h *HA) ChangeThroughSurvivor(ctx context.Context) error {
	added, err := h.AddNodeHosts(ctx, 1)
	if err != nil {
		return err
	}
	h.Added, h.Removed = added[0], h.Nodes[len(h.Nodes)-2]
	h.Step("fabric add-nodes --nodes %s: the CLI finds %s down and goes to %s", h.Endpoint(h.Added), h.Killed.Name(), h.Survivor.Name())
	out, err := h.AddNodes(ctx, added)
	h.show(out)
	if err != nil {
		return err
	}
	h.Step("fabric nodes remove %s --yes", h.Removed.Name())
	out, err = h.Remove(ctx, h.Removed)
	h.show(out)
	return err
}

// Remove removes node with fabric nodes remove and returns the CLI's
// output; LiveNodes leaves it out from then on.
func (h *HA) Remove(ctx context.Context, node *nshost.Host) (string, error) {
	out, err := h.CLI(ctx, "nodes", "remove", node.Name(), "--yes", "--admin-dir", h.AdminDir)
	if err == nil {
		h.removed[node] = true
	}
	return out, err
}

// LiveNodes are the nodes not removed.
func (h *HA) LiveNodes() []*nshost.Host {
	var out []*nshost.Host
	for _, n := range h.Nodes {
		if !h.removed[n] {
			out = append(out, n)
		}
	}
	return out
}

// CheckChanges shows that every node applied both changes: each watches
// the survivor at the cluster's revision, has the added node and not the
// removed one among its WireGuard peers, and pings every live peer.
func (h *HA) CheckChanges(ctx context.Context) error {
	h.Step("every node applied both changes: it watches %s at the cluster's revision, %s is its peer, %s is not", h.Survivor.Name(), h.Added.Name(), h.Removed.Name())
	st, err := h.Status(ctx)
	if err != nil {
		return err
	}
	if _, ok := nshost.PeerByName(st, h.Removed.Name()); ok {
		return fmt.Errorf("%s is still listed", h.Removed.Name())
	}
	if err := nshost.NodesWatching(st, h.Survivor.Name()); err != nil {
		return err
	}
	hosts := append([]*nshost.Host{h.Survivor}, h.LiveNodes()...)
	took, err := h.WaitMesh(ctx, time.Minute, hosts, h.Killed)
	if err != nil {
		return err
	}
	for _, p := range st.Peers {
		if p.Role == "node" {
			fmt.Fprintf(h.Out, "  %-6s %-15s applied revision %d of %d, watching %s\n", p.Name, p.VPNIP, p.AppliedRevision, st.Revision, p.Watching)
		}
	}
	fmt.Fprintf(h.Out, "  wg show fabric0 on %d hosts: exactly the active peers (%s among them, %s not); every live VPN IP answers ping%s\n",
		len(hosts), h.Added.Name(), h.Removed.Name(), meshWait(took))
	return nil
}

// StopTransfers ends the transfers and sums them up: every one must have
// succeeded.
func (h *HA) StopTransfers(context.Context) error {
	results := h.transfers.stop()
	h.Step("transfers during the failover and the changes: %d", len(results))
	failed := 0
	for _, r := range results {
		mark := "ok, SHA-256 verified by the target"
		if r.err != nil {
			mark = "FAILED: " + r.err.Error()
			failed++
		}
		fmt.Fprintf(h.Out, "  %+6.1fs  %-6s -> %-6s %5.2fs  %s\n", r.start.Sub(h.KilledAt).Seconds(), r.from.Name(), r.to.Name(), r.took.Seconds(), mark)
	}
	if len(results) == 0 {
		return errors.New("no transfer ran during the failover")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d transfers during the failover failed", failed, len(results))
	}
	return nil
}

// Restart starts the killed coordinator again and shows it catching up:
// it follows the changes made while it was down, from etcd, and meshes
// with the added node.
func (h *HA) Restart(ctx context.Context) error {
	h.Step("restarting fabricd on %s: it reads the cluster from etcd and catches up", h.Killed.Name())
	if err := h.StartFabricd(ctx, h.Killed); err != nil {
		return err
	}
	if err := h.coordinators(ctx, "fabric coordinators list: "+h.Killed.Name()+" is back at the cluster's revision; it reads from etcd that the nodes watch "+h.Survivor.Name(), func(st clusterstatus.Status) error {
		for _, c := range h.Coordinators {
			if p, _ := nshost.PeerByName(st, c.Name()); !p.Online || p.AppliedRevision != st.Revision {
				return fmt.Errorf("%s online %v at revision %d of %d", p.Name, p.Online, p.AppliedRevision, st.Revision)
			}
		}
		return nshost.NodesWatching(st, h.Survivor.Name())
	}); err != nil {
		return err
	}
	hosts := append(append([]*nshost.Host{}, h.Coordinators...), h.LiveNodes()...)
	took, err := h.WaitMesh(ctx, time.Minute, hosts)
	if err != nil {
		return err
	}
	fmt.Fprintf(h.Out, "  %s has %s as its peer, not %s; all %d hosts ping each other%s\n", h.Killed.Name(), h.Added.Name(), h.Removed.Name(), len(hosts), meshWait(took))
	return nil
}

// meshWait says how long a mesh check waited, when it had to: a peer that
// one side added well before the other waits for WireGuard's handshake
// retry.
func meshWait(took time.Duration) string {
	if took < time.Second {
		return ""
	}
	return fmt.Sprintf(" (after %.1fs of checks)", took.Seconds())
}

// transferResult is one transfer of a transferLoop.
type transferResult struct {
	from, to *nshost.Host
	start    time.Time
	took     time.Duration
	err      error
}

// transferLoop sends a file back and forth between two pairs of nodes
// until stopped.
type transferLoop struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	results []transferResult
}

func (h *HA) startTransfers() (*transferLoop, error) {
	file := filepath.Join(h.Admin.Dir(), "pastiche-ha.bin")
	if err := writeRandom(file, 1<<20); err != nil {
		return nil, err
	}
	pairs := [][2]*nshost.Host{{h.Nodes[0], h.Nodes[1]}, {h.Nodes[2], h.Nodes[3]}}
	ctx, cancel := context.WithCancel(context.Background())
	l := &transferLoop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ctx.Err() == nil; i++ {
			pair := pairs[i%len(pairs)]
			start := time.Now()
			out, err := h.CLI(ctx, "pastiche", "send", "--from", pair[0].Name(), "--to", pair[1].Name(), file, "--admin-dir", h.AdminDir)
			if ctx.Err() != nil {
				return // stopped during this one: not counted
			}
			if err != nil {
				err = fmt.Errorf("%w: %s", err, lastLine(out))
			}
			l.mu.Lock()
			l.results = append(l.results, transferResult{from: pair[0], to: pair[1], start: start, took: time.Since(start), err: err})
			l.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return l, nil
}

// stop ends the loop and returns its results; it may be called again.
func (l *transferLoop) stop() []transferResult {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.results
}
