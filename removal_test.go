package fabric_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/node"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/testbed/nshost"
	"google.golang.org/grpc"
)

// offlineBound is the documented bound within which a killed node shows
// offline (README, fabric status): 25 s, the coordinator's kernel giving
// the connection up (vpnapi.ServerDeadAfter, twice at worst), the liveness
// grace and the check every second, with a margin for a loaded machine.
const offlineBound = 30 * time.Second

// TestRemovalLivenessAndEvents, on one cluster of four namespace hosts:
// fabric nodes remove takes h3 out (it can no longer ping any VPN IP nor
// call any service, it is back in accepting-init and add-nodes adds it
// again); a SIGKILLed h4 shows offline in fabric status within the
// documented bound and fabric watch does not count it; and fabric events
// --follow, started before all that, shows the join, the removal and the
// offline event in order.
func TestRemovalLivenessAndEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, hosts := newFabric(t, 4, nil)
	h1, h2, h3, h4 := hosts[0], hosts[1], hosts[2], hosts[3]
	activate(t, f, h1, hosts[1:])
	converge(t, f, 4)
	checkMesh(t, f, hosts)
	st := status(t, f)
	var vpnIPs []string
	for _, p := range st.Peers {
		vpnIPs = append(vpnIPs, p.VPNIP)
		if !p.Online || p.LastSeen == "" {
			t.Errorf("%s after activation: online %v, last seen %q; want online, seen", p.Name, p.Online, p.LastSeen)
		}
	}
	oldH3 := peerByName(t, st, "h3")

	follow, err := f.StartCLI("events", "--follow", "-o", "json", "--admin-dir", f.AdminDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { follow.Stop(context.Background()) })

	t.Run("nodes remove takes the node out", func(t *testing.T) {
		out, err := f.CLI(ctx, "nodes", "remove", "h3", "--admin-dir", f.AdminDir)
		if err == nil || !strings.Contains(out, "standard input is not a terminal: run again with --yes") {
			t.Fatalf("nodes remove without --yes and without a terminal: %v\n%s", err, out)
		}
		out, err = f.CLI(ctx, "nodes", "remove", "h3", "--yes", "--admin-dir", f.AdminDir)
		t.Logf("fabric nodes remove:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`removed node h3 \(VPN IP %s, %s, active\) at revision \d+\nthe machine was told to leave`,
			regexp.QuoteMeta(oldH3.VPNIP), regexp.QuoteMeta(f.Endpoint(h3)))
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("nodes remove said:\n%s\nwant it to match %s", out, want)
		}
		remaining := []*nshost.Host{h1, h2, h4}
		converge(t, f, 3)
		checkMesh(t, f, remaining) // every remaining host's wg lists exactly the others
		if slices.ContainsFunc(status(t, f).Peers, func(p clusterstatus.Peer) bool { return p.Name == "h3" || p.VPNIP == oldH3.VPNIP }) {
			t.Error("status still lists h3")
		}

		// h3 waits for activation again, with its interface gone.
		waitState(t, f, h3, "accepting-init")
		if addr, err := f.VPNAddr(ctx, h3); err != nil || addr.IsValid() {
			t.Errorf("h3's fabric0 after its removal: %v, %v; want none", addr, err)
		}
		if answered := pingAny(t, h3, vpnIPs); len(answered) > 0 {
			t.Errorf("h3 still pings %v", answered)
		}
		if answered := pingAny(t, h2, []string{oldH3.VPNIP}); len(answered) > 0 {
			t.Errorf("h2 still pings h3's old VPN IP %v", answered)
		}
		for _, p := range st.Peers {
			for _, port := range []uint16{serviceid.PastichePort, serviceid.ReevePort, node.DefaultVPNAPIPort, serviceid.StewardPort} {
				addr := netip.AddrPortFrom(netip.MustParseAddr(p.VPNIP), port).String()
				dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				conn, err := h3.DialContext(dctx, addr)
				cancel()
				if err == nil {
					conn.Close()
					t.Errorf("h3 still reaches %s (%s)", addr, p.Name)
				}
			}
		}
		payload := filepath.Join(f.Admin.Dir(), "payload.txt")
		if err := os.WriteFile(payload, []byte("after the removal\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, send := range [][2]string{{"h2", "h3"}, {"h3", "h2"}} {
			out, err := f.CLI(ctx, "pastiche", "send", "--from", send[0], "--to", send[1], "--admin-dir", f.AdminDir, payload)
			if err == nil || !strings.Contains(out, "permission denied") {
				t.Errorf("pastiche send from %s to %s after the removal: %v\n%s", send[0], send[1], err, out)
			}
		}
	})

	t.Run("add-nodes adds the removed machine again", func(t *testing.T) {
		out, err := f.AddNodes(ctx, []*nshost.Host{h3})
		t.Logf("fabric add-nodes:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		converge(t, f, 4)
		checkMesh(t, f, hosts)
		again := peerByName(t, status(t, f), "h3")
		if again.VPNIP == oldH3.VPNIP || again.WGPubKey == oldH3.WGPubKey {
			t.Errorf("h3 came back with VPN IP %s and key %s; want a new IP (the old one %s is retired) and a new identity", again.VPNIP, again.WGPubKey, oldH3.VPNIP)
		}
	})

	t.Run("a SIGKILLed node shows offline", func(t *testing.T) {
		if err := f.Daemon(h4).Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		var p clusterstatus.Peer
		for {
			p = peerByName(t, status(t, f), "h4")
			if !p.Online || time.Since(killed) > offlineBound {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		took := time.Since(killed)
		t.Logf("h4 offline %.1fs after SIGKILL (last seen %s)", took.Seconds(), p.LastSeen)
		if p.Online {
			t.Fatalf("h4 still online %s after SIGKILL (documented bound %s)", took.Round(time.Second), offlineBound)
		}
		if p.LastSeen == "" || p.State != "active" {
			t.Errorf("h4 offline: %+v; want active, with when it was last seen", p)
		}
		table, err := f.CLI(ctx, "status", "--admin-dir", f.AdminDir)
		if err != nil || !regexp.MustCompile(`(?m)^h4\s+node\s+active\s+offline\s+\d+\S* ago\s`).MatchString(table) {
			t.Errorf("fabric status table (%v):\n%s", err, table)
		}
		out, err := f.Watch(ctx, 4, 3*time.Second)
		if err == nil || !strings.Contains(out, "offline: h4 (last seen ") {
			t.Errorf("fabric watch with h4 killed: %v\n%s", err, out)
		}
	})

	t.Run("events --follow shows the join, the removal and the offline event in order", func(t *testing.T) {
		// The offline event is committed before status shows it: wait
		// for the follower to print it, then stop it.
		var evs []clusterstatus.Event
		deadline := time.Now().Add(30 * time.Second)
		for {
			evs = jsonEvents(t, follow.Log())
			if slices.ContainsFunc(evs, func(e clusterstatus.Event) bool { return e.Kind == "offline" && e.Node == "h4" }) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := follow.Interrupt(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-follow.Exited():
		case <-time.After(30 * time.Second):
			t.Fatal("fabric events --follow did not stop on SIGINT")
		}
		if code := follow.ExitCode(); code != 0 {
			t.Errorf("fabric events --follow exited %d after SIGINT, want 0:\n%s", code, follow.Log())
		}
		var seq []string
		var last uint64
		seen := map[string]bool{}
		for _, e := range evs {
			if e.Kind == "applied" {
				continue
			}
			key := fmt.Sprintf("%d %s %s", e.Revision, e.Kind, e.VPNIP)
			if e.Revision < last || seen[key] {
				t.Errorf("event %s out of order or twice (after revision %d)", key, last)
			}
			last, seen[key] = e.Revision, true
			if e.Node == "h3" || e.Node == "h4" {
				seq = append(seq, e.Kind+" "+e.Node)
			}
		}
		want := []string{"activated h3", "removed h3", "activated h3", "offline h4"}
		if !isSubsequence(want, seq) {
			t.Errorf("events of h3 and h4: %v; want %v in this order\n%s", seq, want, follow.Log())
		}
		if !slices.ContainsFunc(evs, func(e clusterstatus.Event) bool { return e.Kind == "applied" }) {
			t.Error("no applied event was followed")
		}
	})
}

// waitState waits until h's fabricd reports state (GetState with the
// bootstrap key, from the admin host).
func waitState(t *testing.T, f *nshost.Fabric, h *nshost.Host, state string) {
	t.Helper()
	key, err := bootstrapkey.ReadFile(f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pubapi.Dial(f.Endpoint(h), authconn.ClientConfig{BootstrapKey: key}, grpc.WithContextDialer(f.Admin.DialContext))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.GetState(ctx, &pubapipb.GetStateRequest{})
		cancel()
		if err == nil && resp.GetState() == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %s (%v), not %s", h.Name(), resp.GetState(), err, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pingAny pings each of ips once from h and returns those that answered.
func pingAny(t *testing.T, h *nshost.Host, ips []string) []string {
	t.Helper()
	script := `for ip in "$@"; do ping -c 1 -w 2 -q "$ip" >/dev/null 2>&1 && echo "$ip"; done; true`
	out, err := h.Run(context.Background(), "sh", append([]string{"-c", script, "ping-any"}, ips...)...)
	if err != nil {
		t.Fatalf("pinging from %s: %v\n%s", h.Name(), err, out)
	}
	return strings.Fields(out)
}

// jsonEvents decodes the JSON lines of fabric events -o json in log.
func jsonEvents(t *testing.T, log string) []clusterstatus.Event {
	t.Helper()
	var out []clusterstatus.Event
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e clusterstatus.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("fabric events printed %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// isSubsequence reports whether want appears in got in order.
func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
