package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// floodConns is the number of half-open connections of each flood: TCP
// connections to the coordinator's pubapi that never start their TLS
// handshake.
const floodConns = 5000

// floodStatusCalls is how many `fabric status` are timed before and during
// each flood.
const floodStatusCalls = 5

// floodResult is one flood's figures.
type floodResult struct {
	statusS   []float64 // seconds per `fabric status` during the flood
	held      int       // connections still open a second after the flood: held by the server
	rssDuring float64   // MB
	rssAfter  float64   // MB, a few seconds after the flood ended
}

// flood floods the coordinator of a two-peer cluster with floodConns
// half-open connections, from one source address and then from 50, and
// times `fabric status` (from the admin's own address) meanwhile; it
// reports the coordinator fabricd's resident memory before, during and
// after.
func (b *bench) flood(ctx context.Context, o options, nsErr error) {
	if nsErr != nil {
		b.skip("flood: namespace-host scenario", nsErr)
		return
	}
	work, err := os.MkdirTemp("", "fabric-bench-flood-")
	if err != nil {
		b.fail("flood", err)
		return
	}
	defer os.RemoveAll(work)
	r, err := floodRun(ctx, o.binDir, work)
	if err != nil {
		b.fail("flood", err)
		return
	}
	b.record("flood_status_baseline_s", "s per fabric status (no flood)", r.baselineS)
	b.record("flood_rss_before_mb", "MB resident, coordinator fabricd before the floods", []float64{r.rssBefore})
	for _, f := range []struct {
		name string
		res  floodResult
	}{{"1_source", r.one}, {"50_sources", r.fifty}} {
		b.record("flood_"+f.name+"_status_s", fmt.Sprintf("s per fabric status during %d half-open connections from %s", floodConns, strings.ReplaceAll(f.name, "_", " ")), f.res.statusS)
		b.record("flood_"+f.name+"_status_max_s", "s, the slowest of them", []float64{slices.Max(f.res.statusS)})
		b.record("flood_"+f.name+"_held_conns", "connections the coordinator kept open (handshakes in progress)", []float64{float64(f.res.held)})
		b.record("flood_"+f.name+"_rss_during_mb", "MB resident during the flood", []float64{f.res.rssDuring})
		b.record("flood_"+f.name+"_rss_after_mb", "MB resident after it", []float64{f.res.rssAfter})
	}
}

// floodRuns are the results of the two floods.
type floodRuns struct {
	baselineS  []float64
	rssBefore  float64
	one, fifty floodResult
}

func floodRun(ctx context.Context, binDir, work string) (floodRuns, error) {
	var r floodRuns
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return r, err
	}
	defer lab.Close()
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir, LogLevel: "warn"})
	if err != nil {
		return r, err
	}
	hosts, err := f.AddPeers(ctx, 2, nil, nil)
	if err != nil {
		return r, err
	}
	if out, err := f.Activate(ctx, hosts[0], hosts[1:]); err != nil {
		return r, fmt.Errorf("%w: %s", err, out)
	}
	if out, err := f.Watch(ctx, 2, time.Minute); err != nil {
		return r, fmt.Errorf("%w: %s", err, out)
	}
	coordinator := f.Daemon(hosts[0])
	if r.baselineS, err = timeStatus(ctx, f); err != nil {
		return r, err
	}
	if r.rssBefore, err = rssMB(coordinator.PID()); err != nil {
		return r, err
	}
	// The flood's sources are addresses of the admin host beside its own,
	// which `fabric status` keeps using.
	var sources []netip.Addr
	for i := range 50 {
		ip := netip.MustParseAddr("198.51.100." + strconv.Itoa(200+i))
		if err := f.Admin.AddAddress(ctx, ip); err != nil {
			return r, err
		}
		sources = append(sources, ip)
	}
	target := f.Endpoint(hosts[0])
	if r.one, err = floodOnce(ctx, f, coordinator.PID(), target, sources[:1]); err != nil {
		return r, fmt.Errorf("flood from one source: %w", err)
	}
	if r.fifty, err = floodOnce(ctx, f, coordinator.PID(), target, sources); err != nil {
		return r, fmt.Errorf("flood from 50 sources: %w", err)
	}
	return r, nil
}

// floodOnce opens floodConns half-open connections to target, evenly from
// sources, times `fabric status` while they are open, and closes them.
func floodOnce(ctx context.Context, f *nshost.Fabric, pid int, target string, sources []netip.Addr) (floodResult, error) {
	var res floodResult
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
		errs  = make([]error, len(sources))
	)
	for i, src := range sources {
		wg.Go(func() {
			cs, err := f.Admin.DialManyFrom(ctx, src, target, floodConns/len(sources))
			mu.Lock()
			conns = append(conns, cs...)
			mu.Unlock()
			errs[i] = err
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	var err error
	if res.statusS, err = timeStatus(ctx, f); err != nil {
		return res, err
	}
	res.held = countOpen(conns)
	if res.rssDuring, err = rssMB(pid); err != nil {
		return res, err
	}
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(3 * time.Second)
	res.rssAfter, err = rssMB(pid)
	return res, err
}

// timeStatus runs `fabric status` floodStatusCalls times and returns the
// seconds each took.
func timeStatus(ctx context.Context, f *nshost.Fabric) ([]float64, error) {
	var out []float64
	for range floodStatusCalls {
		start := time.Now()
		if text, err := f.CLI(ctx, "status", "--admin-dir", f.AdminDir); err != nil {
			return nil, fmt.Errorf("fabric status: %w: %s", err, text)
		}
		out = append(out, time.Since(start).Seconds())
	}
	return out, nil
}

// countOpen counts the connections the server has not closed: a read
// that does not end within a moment means the connection is open.
func countOpen(conns []net.Conn) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	open := 0
	sem := make(chan struct{}, 256)
	for _, c := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return open
}

// rssMB is the resident memory of process pid, in MB (10^6 bytes).
func rssMB(pid int) (float64, error) {
	b, err := nshost.RSS(pid)
	return float64(b) / 1e6, err
}
