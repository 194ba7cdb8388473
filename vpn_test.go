package fabric_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// vpnStatus is the part of `fabric vpn status -o json` the test reads.
type vpnStatus struct {
	Up    bool `json:"up"`
	State *struct {
		Interface   string `json:"interface"`
		Coordinator string `json:"coordinator"`
		Revision    uint64 `json:"revision"`
		WGEndpoint  string `json:"wgEndpoint"`
	} `json:"state"`
	Peers []struct {
		Name           string `json:"name"`
		VPNIP          string `json:"vpnIP"`
		HandshakeAgeMs int64  `json:"handshakeAgeMs"`
		OnInterface    bool   `json:"onInterface"`
	} `json:"peers"`
}

func readVPNStatus(t *testing.T, f *nshost.Fabric) (vpnStatus, error) {
	t.Helper()
	out, err := f.CLI(context.Background(), "vpn", "status", "-o", "json", "--admin-dir", f.AdminDir)
	var st vpnStatus
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil {
		return st, fmt.Errorf("fabric vpn status -o json: %v, %v: %s", err, jerr, out)
	}
	return st, nil
}

// eventuallyNS polls cond every 200 ms until it returns nil or timeout
// passes, and fails with its last error.
func eventuallyNS(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
	return 0
}

// TestAdminVPN: `fabric vpn up` puts the admin host on the VPN as a live
// peer: it reaches every node, a node added later with no other step, and a
// restarted node reaches it at once, a removed node leaves its interface;
// `fabric vpn status` shows it; `fabric vpn down` takes it off and tells
// the coordinator its endpoint is gone.
func TestAdminVPN(t *testing.T) {
	f, hosts := newFabric(t, 3, nil)
	ctx := context.Background()
	activate(t, f, hosts[0], hosts[1:])
	converge(t, f, 3)
	t.Cleanup(func() {
		if t.Failed() {
			if data, err := os.ReadFile(filepath.Join(f.AdminDir, "vpn.log")); err == nil {
				t.Logf("--- admin vpn.log:\n%s", data)
			}
		}
	})

	out, err := f.AdminVPNDaemonUp(ctx)
	t.Logf("fabric vpn up: %s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "fabric vpn is up: interface fabric-vpn") {
		t.Errorf("fabric vpn up said %q", out)
	}
	st := status(t, f)
	if err := nshost.PingAll(ctx, f.Admin, vpnIPs(st)); err != nil {
		t.Fatalf("admin host after fabric vpn up: %v", err)
	}
	wantEndpoint := netip.AddrPortFrom(f.Admin.IP(), 51821).String()
	eventuallyNS(t, 20*time.Second, "the admin to be online with its endpoint at the coordinator", func() error {
		st := status(t, f)
		if len(st.Admins) != 1 || st.Admins[0].WGEndpoint != wantEndpoint || !st.Admins[0].Online {
			return fmt.Errorf("admins %+v, want one online at %s", st.Admins, wantEndpoint)
		}
		return nil
	})

	t.Run("status", func(t *testing.T) {
		// The admin holds the revision of the last message it got: a
		// change that does not concern it (its own coming online) reaches
		// it with the next keepalive only (vpnapi.DefaultKeepalive, 30 s),
		// while the coordinator counts it current at once.
		eventuallyNS(t, 20*time.Second, "fabric vpn status to show a current revision", func() error {
			vs, err := readVPNStatus(t, f)
			st := status(t, f)
			switch {
			case err != nil:
				return err
			case len(st.Admins) != 1 || st.Admins[0].AppliedRevision != st.Revision:
				return fmt.Errorf("admins %+v, want one current at revision %d", st.Admins, st.Revision)
			case !vs.Up || vs.State == nil || vs.State.Coordinator != "h1" || vs.State.Revision == 0 || vs.State.Revision > st.Revision || vs.State.WGEndpoint != wantEndpoint:
				return fmt.Errorf("status %+v, want up following h1 at a revision up to %d, endpoint %s", vs, st.Revision, wantEndpoint)
			case len(vs.Peers) != 3:
				return fmt.Errorf("peers %+v, want the 3 hosts", vs.Peers)
			}
			for _, p := range vs.Peers {
				if !p.OnInterface || p.HandshakeAgeMs < 0 {
					return fmt.Errorf("peer %+v: want it on the interface with a handshake", p)
				}
			}
			return nil
		})
	})

	t.Run("add-nodes: the new node is reachable with no other step", func(t *testing.T) {
		added, err := f.AddPeers(ctx, 1, func(int) string { return "h4" }, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := f.AddNodes(ctx, added); err != nil {
			t.Fatalf("fabric add-nodes: %v\n%s", err, out)
		}
		converge(t, f, 4)
		h4 := peerByName(t, status(t, f), "h4")
		took := eventuallyNS(t, 30*time.Second, "the admin to reach h4", func() error {
			return nshost.PingAll(ctx, f.Admin, []string{h4.VPNIP})
		})
		t.Logf("the admin reached h4 %v after the cluster converged", took.Round(time.Millisecond))
		hosts = append(hosts, added...)
	})

	t.Run("a restarted node reaches the admin at once", func(t *testing.T) {
		admin := status(t, f).Admins[0].VPNIP
		h2 := hosts[1]
		if err := f.Daemon(h2).Kill(); err != nil { // a crash: the node's wireguard-go goes with it
			t.Fatal(err)
		}
		if err := f.StartFabricd(ctx, h2); err != nil {
			t.Fatal(err)
		}
		// The node pings first: before the fix it had no endpoint for the
		// admin and waited for the admin's WireGuard to give up its old
		// session (about 17 s).
		took := eventuallyNS(t, 10*time.Second, "h2 to reach the admin", func() error {
			_, err := h2.Run(ctx, "ping", "-c", "1", "-W", "1", admin)
			return err
		})
		t.Logf("h2 reached the admin %v after its fabricd listened again", took.Round(time.Millisecond))
		converge(t, f, 4)
		if err := nshost.PingAll(ctx, f.Admin, vpnIPs(status(t, f))); err != nil {
			t.Errorf("admin host after h2's restart: %v", err)
		}
	})

	t.Run("a removed node leaves the admin's interface", func(t *testing.T) {
		h3 := peerByName(t, status(t, f), "h3")
		if out, err := f.CLI(ctx, "nodes", "remove", "h3", "--yes", "--admin-dir", f.AdminDir); err != nil {
			t.Fatalf("fabric nodes remove: %v\n%s", err, out)
		}
		eventuallyNS(t, 20*time.Second, "the admin to drop h3", func() error {
			out, err := f.Admin.Run(ctx, "wg", "show", "fabric-vpn", "peers")
			if err != nil {
				return err
			}
			if strings.Contains(out, h3.WGPubKey) {
				return fmt.Errorf("wg show fabric-vpn peers still lists h3 (%s)", h3.WGPubKey)
			}
			return nil
		})
	})

	t.Run("down removes the interface", func(t *testing.T) {
		out, err := f.AdminVPNDaemonDown(ctx)
		t.Logf("fabric vpn down: %s", out)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := f.Admin.Run(ctx, "ip", "link", "show", "dev", "fabric-vpn"); err == nil {
			t.Errorf("fabric-vpn still exists after fabric vpn down:\n%s", out)
		}
		if vs, err := readVPNStatus(t, f); err != nil || vs.Up {
			t.Errorf("fabric vpn status after down: %+v, %v; want down", vs, err)
		}
		if _, err := os.Stat(filepath.Join(f.AdminDir, "vpn.pid")); err == nil {
			t.Error("vpn.pid left after fabric vpn down")
		}
		// The daemon told the coordinator it roams: the nodes stop sending
		// keepalives to an endpoint nobody answers.
		if a := status(t, f).Admins; len(a) != 1 || a[0].WGEndpoint != "" {
			t.Errorf("admins after fabric vpn down: %+v, want one without an endpoint", a)
		}
	})
}
