package inproc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/testlog"
	"github.com/fabricmesh/fabric/testbed/inproc"
)

// TestSeveralCoordinators: two coordinators share the cluster's store; the
// second joins with fabric coordinators add, the admin bundle lists both,
// and once the first is gone the CLI fails over to the second, which adds a
// node that every remaining peer meshes with.
func TestSeveralCoordinators(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := inproc.New(t.TempDir(), testlog.NewLevel(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	c.Keepalive = 2 * time.Second
	t.Cleanup(func() { cancel(); c.Close() })
	var coords, nodes []*inproc.Peer
	for i := range 2 {
		p, err := c.AddCoordinatorPeer(ctx, fmt.Sprintf("c%d", i+1), "sharks")
		if err != nil {
			t.Fatal(err)
		}
		coords = append(coords, p)
	}
	for i := range 3 {
		p, err := c.AddPeer(ctx, fmt.Sprintf("n%d", i+1), "sharks")
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, p)
	}
	cliOK(t, c, "activate", "--coordinator", coords[0].Endpoint.String(), "--nodes", inproc.Endpoints(nodes[:2]),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", c.AdminDir())
	out := cliOK(t, c, "coordinators", "add", coords[1].Endpoint.String(), "--admin-dir", c.AdminDir())
	if !strings.Contains(out, "coordinator c2 is up at VPN IP") {
		t.Errorf("coordinators add said:\n%s", out)
	}
	cliOK(t, c, "watch", "--n", "4", "--timeout", "20s", "--admin-dir", c.AdminDir())
	if got := coords[1].Core().Status(); got.State != core.StateCoordinator {
		t.Fatalf("the second coordinator is %s", got.State)
	}
	list := cliOK(t, c, "coordinators", "list", "--admin-dir", c.AdminDir())
	for _, name := range []string{"c1", "c2"} {
		if !strings.Contains(list, name) {
			t.Errorf("coordinators list lacks %s:\n%s", name, list)
		}
	}
	checkDevices(t, c, append(slices.Clone(coords), nodes[:2]...))

	coords[0].Stop()
	cliOK(t, c, "add-nodes", "--nodes", inproc.Endpoints(nodes[2:]), "--admin-dir", c.AdminDir())
	n3 := nodes[2].Core().Status().VPNIP
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range []*inproc.Peer{coords[1], nodes[0], nodes[1]} {
		for !slices.Contains(p.Network.Device().Peers, netip.PrefixFrom(n3, 32)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s has no peer for n3 (%s) after the first coordinator went away: %v", p.Name, n3, p.Network.Device().Peers)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The status says which coordinator every node watches: the second.
	for {
		var st clusterstatus.Status
		out := cliOK(t, c, "status", "-o", "json", "--admin-dir", c.AdminDir())
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		var notYet []string
		for _, p := range st.Peers {
			if p.Role == "node" && (p.Watching != "c2" || !p.Online) {
				notYet = append(notYet, fmt.Sprintf("%s watching %q online %v", p.Name, p.Watching, p.Online))
			}
		}
		if len(notYet) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the failover the status shows %v", notYet)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if list := cliOK(t, c, "coordinators", "list", "--admin-dir", c.AdminDir()); !regexp.MustCompile(`(?m)^c2 .* yes +3$`).MatchString(list) {
		t.Errorf("coordinators list does not show c2 online with 3 watchers:\n%s", list)
	}
}
