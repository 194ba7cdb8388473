package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// cliHelperEnv makes the test binary the fabric CLI, for the daemon that
// `fabric vpn up` starts by running its own program again.
const cliHelperEnv = "FABRIC_CLI_TEST_AS_FABRIC"

func TestMain(m *testing.M) {
	if os.Getenv(cliHelperEnv) == "1" {
		os.Exit(Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestVPNUpDaemonNotUp: the daemon `fabric vpn up` starts tells it why it
// could not come up (here: no coordinator answers), and leaves no pid file
// or state; a daemon already up is refused before another starts.
func TestVPNUpDaemonNotUp(t *testing.T) {
	dir := t.TempDir()
	a, err := newAdminKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	a.bundle = bundle{ClusterID: "c1", CoordinatorPublicEndpoint: "127.0.0.1:1", CoordinatorTLSPin: make([]byte, 32),
		AdminName: "admin", AdminVPNIP: "203.0.113.2", VPNCIDR: "203.0.113.0/24"}
	if err := a.writeBundle(); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cliHelperEnv, "1")
	code, out := run("vpn", "up", "--admin-dir", dir)
	t.Logf("fabric vpn up: %s", out)
	if code != 1 || !strings.Contains(out, "asking the coordinator for the cluster") || !strings.Contains(out, filepath.Join(dir, vpnLogFile)) {
		t.Errorf("fabric vpn up: exit %d, output %q; want 1 with the daemon's reason and its log", code, out)
	}
	for _, f := range []string{vpnPIDFile, vpnStateFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("a daemon that did not come up left %s", f)
		}
	}
	lock, err := lockPID(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.release()
	code, out = run("vpn", "up", "--admin-dir", dir)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("fabric vpn is already up (pid %d)", os.Getpid())) {
		t.Errorf("fabric vpn up while up: exit %d, output %q; want 1, already up", code, out)
	}
}

func TestVPNOptionsCheck(t *testing.T) {
	good := vpnOptions{iface: "fabric-vpn", listenPort: 51821, endpoint: "auto", wireguard: "auto"}
	tests := []struct {
		name    string
		modify  func(*vpnOptions)
		wantErr string // "" for valid
	}{
		{"defaults", func(*vpnOptions) {}, ""},
		{"endpoint none", func(o *vpnOptions) { o.endpoint = "none" }, ""},
		{"endpoint given", func(o *vpnOptions) { o.endpoint = "198.51.100.7:40000" }, ""},
		{"kernel", func(o *vpnOptions) { o.wireguard = "kernel" }, ""},
		{"userspace", func(o *vpnOptions) { o.wireguard = "userspace" }, ""},
		{"endpoint without port", func(o *vpnOptions) { o.endpoint = "198.51.100.7" }, `--endpoint "198.51.100.7"`},
		{"endpoint port 0", func(o *vpnOptions) { o.endpoint = "198.51.100.7:0" }, `--endpoint "198.51.100.7:0"`},
		{"endpoint unspecified", func(o *vpnOptions) { o.endpoint = "0.0.0.0:51821" }, `--endpoint "0.0.0.0:51821"`},
		{"endpoint a name", func(o *vpnOptions) { o.endpoint = "laptop:51821" }, `--endpoint "laptop:51821"`},
		{"port 0", func(o *vpnOptions) { o.listenPort = 0 }, "--listen-port 0"},
		{"port too large", func(o *vpnOptions) { o.listenPort = 65536 }, "--listen-port 65536"},
		{"interface too long", func(o *vpnOptions) { o.iface = "fabric-vpn-much-too-long" }, "--interface"},
		{"interface with slash", func(o *vpnOptions) { o.iface = "a/b" }, "--interface"},
		{"unknown wireguard", func(o *vpnOptions) { o.wireguard = "ebpf" }, `--wireguard "ebpf"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.modify(&o)
			err := o.check()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("check() = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !isUsage(err)):
				t.Fatalf("check() = %v, want a usage error with %q", err, tt.wantErr)
			}
		})
	}
}

func TestVPNUpBadInput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"bad endpoint", []string{"vpn", "up", "--endpoint", "nowhere", "--admin-dir", dir}, 2, `--endpoint "nowhere"`},
		{"bad port", []string{"vpn", "up", "--listen-port", "-1", "--admin-dir", dir}, 2, "--listen-port -1"},
		{"no bundle", []string{"vpn", "up", "--admin-dir", dir}, 1, "has no admin.json"},
		{"status without bundle dir", []string{"vpn", "status", "-o", "yaml", "--admin-dir", dir}, 2, `-o "yaml"`},
		{"arguments", []string{"vpn", "down", "now", "--admin-dir", dir}, 2, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(tt.args...)
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Errorf("fabric %s: exit %d, output %q; want %d with %q", strings.Join(tt.args, " "), code, out, tt.wantCode, tt.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused commands left files in the admin dir: %v", entries)
	}
}

// TestPIDLock: one daemon holds vpn.pid; the lock, not the PID, says one
// runs.
func TestPIDLock(t *testing.T) {
	dir := t.TempDir()
	if pid, err := runningVPN(dir); pid != 0 || err != nil {
		t.Fatalf("runningVPN without a pid file = %d, %v", pid, err)
	}
	lock, err := lockPID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := runningVPN(dir); pid != os.Getpid() || err != nil {
		t.Errorf("runningVPN while locked = %d, %v; want %d", pid, err, os.Getpid())
	}
	if _, err := lockPID(dir); !errors.Is(err, errVPNRunning) || !strings.Contains(err.Error(), "fabric vpn down") {
		t.Errorf("second lockPID = %v, want errVPNRunning", err)
	}
	if info, err := os.Stat(filepath.Join(dir, vpnPIDFile)); err != nil || info.Mode().Perm() != privateFileMode {
		t.Errorf("pid file: %v, %v", info, err)
	}
	lock.release()
	if pid, err := runningVPN(dir); pid != 0 || err != nil {
		t.Errorf("runningVPN after release = %d, %v", pid, err)
	}
	// A pid file left by a daemon that died names a PID nobody holds.
	if err := os.WriteFile(filepath.Join(dir, vpnPIDFile), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if pid, err := runningVPN(dir); pid != 0 || err != nil {
		t.Errorf("runningVPN with a stale pid file = %d, %v; want 0", pid, err)
	}
}

// TestVPNDownAndStatusWithoutDaemon: with no daemon, down says so or
// removes what a dead one left, and status says why the VPN is down.
func TestVPNDownAndStatusWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if msg, err := vpnDown(ctx, dir); err != nil || msg != "fabric vpn is not up" {
		t.Errorf("vpnDown with nothing = %q, %v", msg, err)
	}
	if r, err := vpnStatusOf(dir, time.Now()); err != nil || r.Up || r.Problem != "fabric vpn is down" {
		t.Errorf("status with nothing = %+v, %v", r, err)
	}
	// A daemon killed with SIGKILL leaves its state and pid file; its
	// interface (a name no test makes) is gone with it.
	if err := writeVPNState(dir, vpnState{PID: 1, Interface: "fabvpnt0"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, vpnPIDFile), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err := vpnStatusOf(dir, time.Now()); err != nil || r.Up || !strings.Contains(r.Problem, "without cleaning up") {
		t.Errorf("status after a crash = %+v, %v", r, err)
	}
	if msg, err := vpnDown(ctx, dir); err != nil || msg != "fabric vpn is down (interface fabvpnt0 removed)" {
		t.Errorf("vpnDown after a crash = %q, %v", msg, err)
	}
	for _, f := range []string{vpnStateFile, vpnPIDFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("vpnDown left %s", f)
		}
	}
	code, out := run("vpn", "status", "--admin-dir", dir)
	if code != 1 || out != "fabric vpn is down\n" {
		t.Errorf("fabric vpn status: exit %d, output %q; want 1, the VPN down", code, out)
	}
}

func TestActivePeersAndWatchedCoordinator(t *testing.T) {
	key := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	cluster := &pubapipb.ClusterStatus{Peers: []*pubapipb.Peer{
		{Name: "h1", Role: "coordinator", State: "active", VpnIp: "203.0.113.1", WgEndpoint: "198.51.100.1:51820",
			WgPubKey: key(1), SigningPubKey: key(2), TlsPin: key(3), PublicEndpoint: "198.51.100.1:7443"},
		{Name: "alice", Role: "admin", State: "active", VpnIp: "203.0.113.2", WgPubKey: key(4), SigningPubKey: key(5)},
		{Name: "h2", Role: "node", State: "active", VpnIp: "203.0.113.3", WgEndpoint: "198.51.100.2:51820", WgPubKey: key(6), SigningPubKey: key(7)},
		{Name: "h3", Role: "node", State: "pending", VpnIp: "203.0.113.4", WgPubKey: key(8)},
		{Name: "h4", Role: "node", State: "failed", VpnIp: "203.0.113.5"},
	}}
	peers, err := activePeers(cluster)
	if err != nil {
		t.Fatal(err)
	}
	want := []records.Peer{
		{Name: "h1", Role: records.RoleCoordinator, VPNIP: netip.MustParseAddr("203.0.113.1"), WGEndpoint: "198.51.100.1:51820", WGPubKey: key(1),
			SigningPubKey: key(2), TLSPin: key(3), State: records.StateActive},
		{Name: "alice", Role: records.RoleAdmin, VPNIP: netip.MustParseAddr("203.0.113.2"), WGPubKey: key(4), State: records.StateActive},
		{Name: "h2", Role: records.RoleNode, VPNIP: netip.MustParseAddr("203.0.113.3"), WGEndpoint: "198.51.100.2:51820", WGPubKey: key(6), State: records.StateActive},
	}
	if diff := cmp.Diff(want, peers, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("activePeers (-want +got):\n%s", diff)
	}

	co, port, err := watchedCoordinator(&pubapipb.GetStateResponse{Name: "h1", VpnapiEndpoint: "203.0.113.1:7444"}, peers)
	if err != nil {
		t.Fatal(err)
	}
	wantCo := core.CoordinatorInfo{Name: "h1", VPNIP: netip.MustParseAddr("203.0.113.1"), VPNPubKey: wgtypes.Key(key(1)), WGEndpoint: "198.51.100.1:51820",
		VPNAPIEndpoint: "203.0.113.1:7444", TLSPin: key(3), SigningPubKey: key(2)}
	if diff := cmp.Diff(wantCo, co, cmpopts.EquateComparable(netip.Addr{})); diff != "" || port != 7444 {
		t.Errorf("watchedCoordinator port %d (-want +got):\n%s", port, diff)
	}
	for _, tt := range []struct {
		name, endpoint, want string
	}{
		{"no vpnapi endpoint (an older fabricd)", "", "does not say where its vpnapi listens"},
		{"vpnapi at a node", "203.0.113.3:7444", "not among the cluster's active peers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := watchedCoordinator(&pubapipb.GetStateResponse{VpnapiEndpoint: tt.endpoint}, peers)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("watchedCoordinator = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestVPNWGEndpoint(t *testing.T) {
	co := core.CoordinatorInfo{Name: "h1", WGEndpoint: "127.0.0.1:51820"}
	tests := []struct {
		endpoint, want string
	}{
		{"none", ""},
		{"198.51.100.7:40000", "198.51.100.7:40000"},
		{"auto", "127.0.0.1:51821"}, // the address toward the coordinator, at the listen port
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			d := &vpnDaemon{opts: vpnOptions{endpoint: tt.endpoint, listenPort: 51821}}
			got, err := d.wgEndpoint(co)
			if err != nil || got != tt.want {
				t.Errorf("wgEndpoint = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestVPNStatusPrint(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	k1, k2, k3 := testWGKey(t), testWGKey(t), testWGKey(t)
	st := vpnState{PID: 42, StartedAt: now.Add(-time.Hour), Interface: "fabric-vpn", Backend: "userspace", AdminVPNIP: "203.0.113.2/24",
		ListenPort: 51821, WGEndpoint: "198.51.100.9:51821", Coordinator: "h1", Revision: 17,
		Peers: []vpnStatePeer{
			{Name: "h1", Role: "coordinator", VPNIP: "203.0.113.1", WGPubKey: k1.String(), WGEndpoint: "198.51.100.1:51820"},
			{Name: "h2", Role: "node", VPNIP: "203.0.113.3", WGPubKey: k2.String(), WGEndpoint: "198.51.100.2:51820"},
		}}
	dev := &wgtypes.Device{ListenPort: 51821, Peers: []wgtypes.Peer{
		{PublicKey: k1, Endpoint: &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 51820}, LastHandshakeTime: now.Add(-12 * time.Second),
			ReceiveBytes: 100, TransmitBytes: 200},
		{PublicKey: k3},
	}}
	r := vpnStatus{Up: true, State: &st}
	r.Peers, r.Extra = livePeers(st.Peers, dev, now)
	var out bytes.Buffer
	printVPNStatus(&out, r)
	want := `fabric vpn is up (pid 42, since 2026-05-01T11:00:00Z)
interface fabric-vpn (wireguard-go) at 203.0.113.2/24, listening on 51821, endpoint told to the cluster: 198.51.100.9:51821
following coordinator h1, revision 17 applied

NAME  ROLE         VPN IP       ENDPOINT            HANDSHAKE             RECEIVED  SENT
h1    coordinator  203.0.113.1  198.51.100.1:51820  12s ago               100       200
h2    node         203.0.113.3  198.51.100.2:51820  not on the interface  0         0
?     ?            ?            -                   never                 0         0
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("vpn status (-want +got):\n%s", diff)
	}
}

func testWGKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}
