package inproc_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/store/boltstore"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/testbed/inproc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// transfer is one `fabric pastiche send` of the removal test.
type transfer struct {
	from, to string
	start    time.Time
	err      error
}

// TestRemovalWhileTransfersRun: a node is removed with fabric nodes remove
// while pastiche transfers run between every kind of pair. Transfers
// between the other peers all succeed; once every peer applied the
// removing revision, every transfer from or to the removed node is
// refused; every peer's pastiche refuses the removed node's client and
// lists no endpoint of it; the node is gone from every device, the status
// and the catalog; a call signed with its old pastiche key (read from its
// state directory) is refused by every pastiche; and the node itself left:
// accepting-init, interface down.
func TestRemovalWhileTransfersRun(t *testing.T) {
	ctx := context.Background()
	c, peers := newCluster(t, 5)
	coordinator, nodes := peers[0], peers[1:]
	doomed := nodes[2] // p4
	var remaining []*inproc.Peer
	for _, p := range peers {
		if p != doomed {
			remaining = append(remaining, p)
		}
	}
	cliOK(t, c, "activate", "--coordinator", coordinator.Endpoint.String(), "--nodes", inproc.Endpoints(nodes),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", c.AdminDir())
	cliOK(t, c, "watch", "--n", "5", "--services", "pastiche", "--timeout", "30s", "--admin-dir", c.AdminDir())
	before, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	doomedIP := netip.MustParseAddr(peerNamed(t, before, doomed.Name).VPNIP)
	doomedClient := serviceid.ID(serviceid.Pastiche, doomed.Name)

	// Every other pastiche accepts the doomed node's client, with this key.
	var doomedKey ed25519.PublicKey
	for _, p := range remaining {
		key, err := reeveOf(t, p).Lookup(serviceid.ID(serviceid.Pastiche, p.Name), doomedClient)
		if err != nil {
			t.Fatalf("before the removal, %s's pastiche does not accept %s: %v", p.Name, doomedClient, err)
		}
		doomedKey = key
	}

	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, make([]byte, 256<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	pairs := [][2]string{
		{"p2", "p4"}, {"p4", "p3"}, {"p1", "p4"}, // the doomed node's
		{"p3", "p5"}, {"p5", "p2"}, {"p1", "p2"}, // the others'
	}
	var (
		mu        sync.Mutex
		transfers []transfer
		wg        sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, pair := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tr := transfer{from: pair[0], to: pair[1], start: time.Now()}
				_, tr.err = c.CLI(ctx, "pastiche", "send", "--from", tr.from, "--to", tr.to, "--name", fmt.Sprintf("from-%s-%d", tr.from, i),
					"--timeout", "30s", "--admin-dir", c.AdminDir(), file)
				mu.Lock()
				transfers = append(transfers, tr)
				mu.Unlock()
			}
		}()
	}
	// The removal comes once every pair has sent a file.
	waitFor(t, "a transfer of every pair", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(transfers) >= len(pairs) && everyPair(transfers, pairs, func(tr transfer) bool { return tr.err == nil })
	})

	out := cliOK(t, c, "nodes", "remove", doomed.Name, "--yes", "--admin-dir", c.AdminDir())
	t.Log(out)
	m := regexp.MustCompile(`removed node p4 \(VPN IP ([0-9.]+), [0-9.:]+, active\) at revision (\d+)`).FindStringSubmatch(out)
	if m == nil || m[1] != doomedIP.String() || !strings.Contains(out, "told to leave") {
		t.Fatalf("fabric nodes remove said:\n%s", out)
	}
	removedAt, _ := strconv.ParseUint(m[2], 10, 64)
	cliOK(t, c, "watch", "--n", "4", "--timeout", "30s", "--admin-dir", c.AdminDir())
	applied := time.Now()
	after, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after.Peers {
		if p.AppliedRevision < removedAt {
			t.Errorf("%s applied %d, before the removal at %d", p.Name, p.AppliedRevision, removedAt)
		}
	}
	// Transfers go on for a while after every peer applied the removal.
	waitFor(t, "two transfers of every pair after the removal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return everyPair(transfers, pairs, func(tr transfer) bool { return tr.start.After(applied) }, 2)
	})
	close(stop)
	wg.Wait()

	for _, tr := range transfers {
		involved := tr.from == doomed.Name || tr.to == doomed.Name
		switch {
		case !involved && tr.err != nil:
			t.Errorf("%s -> %s at %s failed: %v", tr.from, tr.to, tr.start.Format(time.StampMilli), tr.err)
		case involved && tr.start.After(applied) && (tr.err == nil || !strings.Contains(tr.err.Error(), "permission denied")):
			t.Errorf("%s -> %s started after the removal applied: %v; want permission denied", tr.from, tr.to, tr.err)
		}
	}

	t.Run("every pastiche refuses the removed node and lists none of its endpoints", func(t *testing.T) {
		for _, p := range remaining {
			r := reeveOf(t, p)
			self := serviceid.ID(serviceid.Pastiche, p.Name)
			if _, err := r.Lookup(self, doomedClient); err == nil {
				t.Errorf("%s's pastiche still accepts %s", p.Name, doomedClient)
			}
			eps, err := r.EndpointsUp(ctx, self, serviceid.Pastiche)
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(eps, func(e reeve.Endpoint) bool { return strings.HasSuffix(e.ID, "@"+doomed.Name) }) {
				t.Errorf("%s's pastiche may still call the removed node: %v", p.Name, eps)
			}
		}
	})

	t.Run("the removed node is gone from every device, the status and the catalog", func(t *testing.T) {
		checkDevices(t, c, remaining)
		if slices.ContainsFunc(after.Peers, func(p clusterstatus.Peer) bool { return p.Name == doomed.Name || p.VPNIP == doomedIP.String() }) {
			t.Errorf("status still lists the removed node: %+v", after.Peers)
		}
		out := cliOK(t, c, "services", "-o", "json", "--admin-dir", c.AdminDir())
		var catalog struct {
			Services []struct {
				Endpoints, Clients []clusterstatus.Service
			}
		}
		if err := json.Unmarshal([]byte(out), &catalog); err != nil {
			t.Fatal(err)
		}
		for _, s := range catalog.Services {
			for _, e := range append(s.Endpoints, s.Clients...) {
				if strings.HasSuffix(e.ID, "@"+doomed.Name) || strings.HasPrefix(e.Address, doomedIP.String()+":") {
					t.Errorf("the catalog still holds %+v", e)
				}
			}
		}
	})

	t.Run("fabric events shows the join and the removal", func(t *testing.T) {
		all := events(t, c, "--since", "0")
		activated := slices.IndexFunc(all, func(e clusterstatus.Event) bool { return e.Kind == "activated" && e.Node == doomed.Name })
		removed := slices.IndexFunc(all, func(e clusterstatus.Event) bool { return e.Kind == "removed" && e.Node == doomed.Name })
		if activated < 0 || removed < activated || all[removed].Revision != removedAt || all[removed].VPNIP != doomedIP.String() {
			t.Errorf("events: activated p4 at %d, removed p4 at %d (revision %d expected); events:\n%v", activated, removed, removedAt, all)
		}
		from := events(t, c, "--since", fmt.Sprint(removedAt-1))
		if len(from) == 0 || from[0].Kind != "removed" || from[0].Revision != removedAt {
			t.Errorf("events --since %d start with %+v, want the removal", removedAt-1, from)
		}
	})

	t.Run("the removed node left", func(t *testing.T) {
		select {
		case <-doomed.Removed():
		case <-time.After(20 * time.Second):
			t.Fatal("the removed node did not leave")
		}
		if st := doomed.Core().Status(); st.State != core.StateAcceptingInit {
			t.Errorf("the removed node is %s, want %s", st.State, core.StateAcceptingInit)
		}
		if dev := doomed.Network.Device(); dev.Up || len(dev.Peers) > 0 {
			t.Errorf("the removed node's device: %+v", dev)
		}
	})

	t.Run("a call signed with the removed node's old key is refused everywhere", func(t *testing.T) {
		doomed.Stop()
		db, err := boltstore.Open(filepath.Join(doomed.StateDir, "fabric.db"), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		stolen, err := reeve.New(reeve.Config{Store: db, Node: doomed.Name, VPNIP: doomedIP, VPN: c.VPN,
			Register: func(context.Context, []byte) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if key, ok := stolen.PubKey(serviceid.Pastiche); !ok || !key.Equal(doomedKey) {
			t.Fatalf("the removed node's store holds pastiche key %x (%v), not the one the peers accepted (%x)", key, ok, doomedKey)
		}
		for _, p := range after.Peers {
			addr := netip.AddrPortFrom(netip.MustParseAddr(p.VPNIP), serviceid.PastichePort).String()
			conn, err := grpc.NewClient("passthrough:///"+addr, stolen.DialOptions(doomedClient)...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = pastichepb.NewPasticheClient(conn).Stat(ctx, &pastichepb.StatRequest{Name: "from-p2-0"})
			conn.Close()
			if code := status.Code(err); code != codes.Unauthenticated && code != codes.PermissionDenied {
				t.Errorf("%s's pastiche answered a call signed with the removed key: %v", p.Name, err)
			}
		}
	})
}

// everyPair reports whether each pair has at least n (default 1)
// transfers that ok accepts.
func everyPair(transfers []transfer, pairs [][2]string, ok func(transfer) bool, n ...int) bool {
	want := 1
	if len(n) > 0 {
		want = n[0]
	}
	for _, pair := range pairs {
		got := 0
		for _, tr := range transfers {
			if tr.from == pair[0] && tr.to == pair[1] && ok(tr) {
				got++
			}
		}
		if got < want {
			return false
		}
	}
	return true
}

// reeveOf connects to p's reeve over its local socket.
func reeveOf(t *testing.T, p *inproc.Peer) *reeve.Client {
	t.Helper()
	r, err := reeve.DialLocal(filepath.Join(p.StateDir, "reeve.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func peerNamed(t *testing.T, st clusterstatus.Status, name string) clusterstatus.Peer {
	t.Helper()
	for _, p := range st.Peers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no peer %s in %+v", name, st.Peers)
	return clusterstatus.Peer{}
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// events runs fabric events -o json with args and decodes its lines.
func events(t *testing.T, c *inproc.Cluster, args ...string) []clusterstatus.Event {
	t.Helper()
	out := cliOK(t, c, append([]string{"events", "-o", "json", "--admin-dir", c.AdminDir()}, args...)...)
	var evs []clusterstatus.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e clusterstatus.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("fabric events printed %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}
