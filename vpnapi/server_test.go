package vpnapi_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// recv receives the next update of w, bounded by the test's time.
func recv(tb testing.TB, w core.Watch) update.Update {
	tb.Helper()
	type res struct {
		u   update.Update
		err error
	}
	ch := make(chan res, 1)
	go func() {
		u, err := w.Recv()
		ch <- res{u, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			tb.Fatalf("Recv: %v", r.err)
		}
		return r.u
	case <-time.After(10 * time.Second):
		tb.Fatal("no update within 10s")
	}
	return update.Update{}
}

// TestWatch: a node watching from nothing gets the whole cluster, then each
// change that concerns it as it commits, resumes from its revision after a
// reconnect, and gets a keepalive when nothing happens; its reports reach
// the liveness.
func TestWatch(t *testing.T) {
	c := newCluster(t)
	cfg, live := c.config(t)
	cfg.Keepalive = time.Second
	srv := c.serve(t, cfg)
	n1 := c.nodeIPs["n1"]

	w := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{})
	full := recv(t, w)
	if full.Kind != update.Full || full.Revision != c.reg.Revision() {
		t.Fatalf("first update: %v at %d, want a full snapshot at %d", full.Kind, full.Revision, c.reg.Revision())
	}
	if diff := cmp.Diff(c.activePeers(), full.Peers, cmpOpts); diff != "" {
		t.Errorf("snapshot peers (-want +got):\n%s", diff)
	}
	if full.View.Kind != update.ViewFull {
		t.Errorf("snapshot view %v, want a full (empty) view", full.View.Kind)
	}

	n3 := c.addNode(t, "n3", "a")
	for u := recv(t, w); ; u = recv(t, w) {
		if u.Kind == update.Unchanged {
			continue
		}
		if u.Kind != update.Delta || u.Revision != c.reg.Revision() {
			t.Fatalf("after a join: %v at %d, want a delta at %d", u.Kind, u.Revision, c.reg.Revision())
		}
		if diff := cmp.Diff([]records.Peer{onWire(n3)}, u.Peers, cmpOpts); diff != "" {
			t.Errorf("delta peers (-want +got):\n%s", diff)
		}
		break
	}
	if err := w.Report(c.reg.Revision(), 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if u := recv(t, w); u.Kind != update.Unchanged || u.Revision != c.reg.Revision() {
		t.Errorf("idle watch: %v at %d, want a keepalive at %d", u.Kind, u.Revision, c.reg.Revision())
	}
	watching, reports, _ := live.state()
	if watching[n1] != 1 {
		t.Errorf("liveness: n1 watching %d times, want 1", watching[n1])
	}
	if len(reports) < 2 || reports[0] != (report{n1, 0, -1}) || reports[len(reports)-1] != (report{n1, c.reg.Revision(), 1500 * time.Millisecond}) {
		t.Errorf("reports = %+v, want the start at 0 then revision %d with a 1.5s handshake age", reports, c.reg.Revision())
	}
	w.Close()

	// A reconnect resumes from the node's revision: no full snapshot.
	at := c.reg.Revision()
	n4 := c.addNode(t, "n4", "b")
	w2 := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{Applied: at})
	u := recv(t, w2)
	if u.Kind != update.Delta || len(u.Peers) != 1 || u.Peers[0].Name != n4.Name {
		t.Errorf("resumed watch: %v with %v, want a delta with n4", u.Kind, u.Peers)
	}
}

var testUsers = []records.SSHUser{
	{Name: "alice", Keys: []string{sshuserstest.Key(1, "alice@laptop"), sshuserstest.Key(2, "")}, Revision: 3},
	{Name: "bob", Keys: []string{sshuserstest.Key(3, "bob")}, Revision: 5},
}

// TestWatchSSHUsers: a change of the SSH users reaches a watching node as
// the whole set, an empty one when the last user goes; the first answer
// has them too.
func TestWatchSSHUsers(t *testing.T) {
	c := newCluster(t)
	cfg, _ := c.config(t)
	srv := c.serve(t, cfg)
	w := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{})
	if u := recv(t, w); u.Kind != update.Full || !u.HasSSHUsers || len(u.SSHUsers) != 0 {
		t.Fatalf("first update: %v with SSH users %v (%v), want a full snapshot with none", u.Kind, u.SSHUsers, u.HasSSHUsers)
	}
	for _, set := range [][]records.SSHUser{testUsers, testUsers[1:], nil} {
		if _, _, _, err := c.reg.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) { return set, nil }); err != nil {
			t.Fatal(err)
		}
		_, want := c.reg.SSHUsers()
		u := recv(t, w)
		for u.Kind == update.Unchanged {
			u = recv(t, w)
		}
		if u.Kind != update.Delta || !u.HasSSHUsers || u.Revision != c.reg.Revision() {
			t.Fatalf("after a change of the users: %v at %d with users %v, want a delta at %d with them", u.Kind, u.Revision, u.HasSSHUsers, c.reg.Revision())
		}
		if diff := cmp.Diff(want, u.SSHUsers, cmpOpts); diff != "" {
			t.Errorf("SSH users on the wire (-registry +node):\n%s", diff)
		}
	}
}

// TestWatchFull: a node whose revision is ahead of the coordinator's gets
// a full snapshot.
func TestWatchFull(t *testing.T) {
	c := newCluster(t)
	cfg, _ := c.config(t)
	srv := c.serve(t, cfg)
	w := srv.watch(t, c.nodeKeys["n2"], core.WatchStart{Applied: c.reg.Revision() + 50})
	if u := recv(t, w); u.Kind != update.Full || len(u.Peers) != len(c.activePeers()) {
		t.Errorf("a node ahead gets %v with %d peers, want a full snapshot of %d", u.Kind, len(u.Peers), len(c.activePeers()))
	}
}

// TestWatchNothingForTheNode: a change that concerns no WireGuard field
// and no view entry of the node sends it nothing (its watch is not even
// woken); the feed says the node is current anyway, which is how the
// liveness learns it.
func TestWatchNothingForTheNode(t *testing.T) {
	c := newCluster(t)
	cfg, _ := c.config(t)
	cfg.Keepalive = time.Hour
	srv := c.serve(t, cfg)
	w := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{})
	first := recv(t, w)
	if _, err := c.reg.SetRegistration(c.nodeIPs["n2"], nil, "the reeve did not answer"); err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Feed.(*feed.Feed).Current(c.nodeIPs["n1"], first.Revision), c.reg.Revision(); got != want {
		t.Errorf("the feed says n1, answered up to %d, is current up to %d, want %d", first.Revision, got, want)
	}
	got := make(chan update.Update, 1)
	go func() {
		u, err := w.Recv()
		if err == nil {
			got <- u
		}
	}()
	select {
	case u := <-got:
		t.Errorf("n1 was sent %v at %d for a change of n2's registration", u.Kind, u.Revision)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestWatchKeepaliveCarriesRevision: the keepalive after a change that
// did not concern the node (and did not wake it) is at the cluster's
// revision, so what the node reports applied follows the cluster.
func TestWatchKeepaliveCarriesRevision(t *testing.T) {
	c := newCluster(t)
	cfg, _ := c.config(t)
	cfg.Keepalive = 300 * time.Millisecond
	srv := c.serve(t, cfg)
	w := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{})
	first := recv(t, w)
	if _, err := c.reg.SetRegistration(c.nodeIPs["n2"], nil, "the reeve did not answer"); err != nil {
		t.Fatal(err)
	}
	u := recv(t, w)
	if want := (update.Update{Revision: c.reg.Revision(), Kind: update.Unchanged}); !cmp.Equal(u, want) || u.Revision == first.Revision {
		t.Errorf("keepalive after n2's registration changed: %+v, want %+v (first answer at %d)", u, want, first.Revision)
	}
}

// countingConn counts the bytes a watch's connection reads and the writes
// it makes.
type countingConn struct {
	net.Conn
	read, writes *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(int64(n))
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// NetConn is the TCP connection, which the watch has the kernel watch.
func (c countingConn) NetConn() net.Conn { return c.Conn }

// TestWatchConnectionKeepalive: both ends of a watch's connection have the
// kernel probe the other end and give it up, the node's within
// WatchDeadAfter, the coordinator's within ServerDeadAfter.
func TestWatchConnectionKeepalive(t *testing.T) {
	c := newCluster(t)
	c.accepted = make(chan net.Conn, 4)
	cfg, _ := c.config(t)
	srv := c.serve(t, cfg)
	dialled := make(chan net.Conn, 4)
	d := &vpnapi.Dialer{SigningPrivKey: c.nodeKeys["n1"], DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			dialled <- conn
		}
		return conn, err
	}}
	w, err := d.Watch(context.Background(), srv.info(), core.WatchStart{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	recv(t, w)
	for _, tc := range []struct {
		name      string
		conn      net.Conn
		deadAfter time.Duration
	}{
		{"node", <-dialled, vpnapi.WatchDeadAfter},
		{"coordinator", <-c.accepted, vpnapi.ServerDeadAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := tc.conn.(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var keepalive, userTimeout int
			var kerr, uerr error
			if err := sc.Control(func(fd uintptr) {
				keepalive, kerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
				userTimeout, uerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			}); err != nil {
				t.Fatal(err)
			}
			if kerr != nil || uerr != nil {
				t.Fatal(kerr, uerr)
			}
			if got, want := [2]int{keepalive, userTimeout}, [2]int{1, int(tc.deadAfter.Milliseconds())}; got != want {
				t.Errorf("SO_KEEPALIVE, TCP_USER_TIMEOUT = %v, want %v", got, want)
			}
		})
	}
}

// TestWatchIdleFrames: on an idle watch, a keepalive costs the node no
// write and a report costs the coordinator none: the fixed flow-control
// windows turn off gRPC's bandwidth probing, which answers each message
// with a PING (and that with its ACK).
func TestWatchIdleFrames(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepalive time.Duration
		// what the node does, then the bytes it read and the writes it
		// made meanwhile
		run                func(t *testing.T, w core.Watch)
		maxRead, maxWrites int64
	}{
		{name: "keepalives", keepalive: 50 * time.Millisecond, maxRead: 1 << 20, maxWrites: 0, run: func(t *testing.T, w core.Watch) {
			for range 20 {
				if u := recv(t, w); u.Kind != update.Unchanged {
					t.Fatalf("got %v, want a keepalive", u.Kind)
				}
			}
		}},
		// A quiet watch costs the node no HTTP/2 PING either: the kernels
		// watch the connection. (Nodes pinged after 10 s of silence; the
		// keepalive is longer.)
		{name: "no pings", keepalive: 12 * time.Second, maxRead: 1 << 20, maxWrites: 0, run: func(t *testing.T, w core.Watch) {
			// Recv itself bounds the wait (the watch's silence, 29 s):
			// recv's 10 s is too short.
			u, err := w.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if u.Kind != update.Unchanged {
				t.Fatalf("got %v, want a keepalive", u.Kind)
			}
		}},
		{name: "reports", keepalive: time.Hour, maxRead: 0, maxWrites: 1 << 20, run: func(t *testing.T, w core.Watch) {
			for range 20 {
				if err := w.Report(1, -1); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			cfg, _ := c.config(t)
			cfg.Keepalive = tc.keepalive
			srv := c.serve(t, cfg)
			var read, writes atomic.Int64
			d := &vpnapi.Dialer{SigningPrivKey: c.nodeKeys["n1"], DialContext: func(ctx context.Context, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				return countingConn{Conn: conn, read: &read, writes: &writes}, nil
			}}
			w, err := d.Watch(context.Background(), srv.info(), core.WatchStart{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			recv(t, w) // the full snapshot
			time.Sleep(100 * time.Millisecond)
			read0, writes0 := read.Load(), writes.Load()
			tc.run(t, w)
			if got := read.Load() - read0; got > tc.maxRead {
				t.Errorf("the node read %d bytes, want at most %d", got, tc.maxRead)
			}
			if got := writes.Load() - writes0; got > tc.maxWrites {
				t.Errorf("the node wrote %d times, want at most %d", got, tc.maxWrites)
			}
		})
	}
}

// busyFeed has a change for the node at every revision, takes slow to
// compute each answer, and says each is late by late.
type busyFeed struct{ slow, late time.Duration }

func (f busyFeed) Wait(context.Context, netip.Addr, uint64, time.Duration) error { return nil }

func (f busyFeed) Answer(ip netip.Addr, after uint64) (update.Update, error) {
	time.Sleep(f.slow)
	return update.Update{Revision: after + 1, Kind: update.Delta, RemovedPeers: []netip.Addr{netip.MustParseAddr("203.0.113.200")}}, nil
}

func (f busyFeed) Lateness(netip.Addr, uint64) time.Duration { return f.late }

// TestWatchPacing: a watch whose answers are late (the coordinator is busy
// answering every node) waits as long as the answer was late before the
// next one, so changes coalesce; one whose answers are on time is
// answered change by change, and so is one whose changes came while it
// paced (that time is not the coordinator's lateness).
func TestWatchPacing(t *testing.T) {
	slow := vpnapi.PaceAbove + 100*time.Millisecond
	for _, tc := range []struct {
		name       string
		slow, late time.Duration
		atMost     int // answers within the window
		atLeast    int
		windowLen  time.Duration
	}{
		{name: "on time", atLeast: 20, atMost: 1 << 30, windowLen: 300 * time.Millisecond},
		// Answers take slow: without pacing the third is out at 3 slow.
		{name: "late", slow: slow, late: slow, atLeast: 1, atMost: 2, windowLen: 3*slow + 200*time.Millisecond},
		// The feed says late, but the watch has just become ready.
		{name: "changes while pacing", late: vpnapi.PaceAbove + time.Second, atLeast: 20, atMost: 1 << 30, windowLen: 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			cfg, _ := c.config(t)
			cfg.Feed = busyFeed{slow: tc.slow, late: tc.late}
			srv := c.serve(t, cfg)
			w := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{})
			var answers atomic.Int64
			go func() {
				for {
					if _, err := w.Recv(); err != nil {
						return
					}
					answers.Add(1)
				}
			}()
			time.Sleep(tc.windowLen)
			if n := answers.Load(); n < int64(tc.atLeast) || n > int64(tc.atMost) {
				t.Errorf("%d answers in %v with answers late by %v, want from %d to %d", n, tc.windowLen, tc.late, tc.atLeast, tc.atMost)
			}
		})
	}
}

// budgetFeed answers each node once, at revision 1, with a peer whose
// name is size bytes long for the node at big, 8 KiB for the others
// (enough to take from the budget, see vpnapi.MinBudgeted).
type budgetFeed struct {
	big  netip.Addr
	size int
}

func (f budgetFeed) Wait(ctx context.Context, _ netip.Addr, after uint64, wait time.Duration) error {
	if after == 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (f budgetFeed) Answer(ip netip.Addr, after uint64) (update.Update, error) {
	if after > 0 {
		return update.Update{Revision: 1, Kind: update.Unchanged}, nil
	}
	size := 8 << 10
	if ip == f.big {
		size = f.size
	}
	return update.Update{Revision: 1, Kind: update.Delta, Peers: []records.Peer{
		{Name: strings.Repeat("x", size), Role: records.RoleNode, VPNIP: netip.MustParseAddr("203.0.113.200"), State: records.StateActive}}}, nil
}

func (f budgetFeed) Lateness(netip.Addr, uint64) time.Duration { return 0 }

// TestWatchSendBudget: the answers sent and not yet acknowledged hold at
// most the sending budget. While a node that does not report holds all of
// it, another node's answer waits, until the first node reports the
// revision it applied or its answer's SendTimeout passes.
func TestWatchSendBudget(t *testing.T) {
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name    string
		budget  int64
		reports bool // n1 reads and reports its answer
		// n2's answer comes after at least minWait, at most maxWait.
		minWait, maxWait time.Duration
	}{
		{name: "budget held", budget: 1 << 20, minWait: timeout - 500*time.Millisecond, maxWait: timeout + 2*time.Second},
		{name: "budget acknowledged", budget: 1 << 20, reports: true, maxWait: timeout / 2},
		{name: "budget left", budget: 64 << 20, maxWait: timeout / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			cfg, _ := c.config(t)
			cfg.Feed = budgetFeed{big: c.nodeIPs["n1"], size: 4 << 20}
			cfg.SendBudget, cfg.SendTimeout = tc.budget, timeout
			srv := c.serve(t, cfg)
			big := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{})
			if tc.reports {
				u := recv(t, big)
				if err := big.Report(u.Revision, -1); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(300 * time.Millisecond) // n1's answer is sent
			start := time.Now()
			u := recv(t, srv.watch(t, c.nodeKeys["n2"], core.WatchStart{}))
			waited := time.Since(start)
			if len(u.Peers) != 1 || len(u.Peers[0].Name) != 8<<10 {
				t.Errorf("n2's answer has %d peers, want its one peer of an 8 KiB name", len(u.Peers))
			}
			if waited < tc.minWait || waited > tc.maxWait {
				t.Errorf("n2's answer came after %v, want from %v to %v", waited, tc.minWait, tc.maxWait)
			}
		})
	}
}

// TestWatchRemoved: a removed node watching is told so, and so is one that
// watches again later; nothing else reaches it.
func TestWatchRemoved(t *testing.T) {
	c := newCluster(t)
	cfg, _ := c.config(t)
	srv := c.serve(t, cfg)
	w := srv.watch(t, c.nodeKeys["n2"], core.WatchStart{})
	recv(t, w)
	if _, err := c.reg.Remove(c.nodeIPs["n2"]); err != nil {
		t.Fatal(err)
	}
	if u := recv(t, w); u.Kind != update.Removed {
		t.Errorf("after its removal the node gets %v, want Removed", u.Kind)
	}
	if _, err := w.Recv(); err == nil {
		t.Error("the watch of a removed node goes on")
	}
	w2 := srv.watch(t, c.nodeKeys["n2"], core.WatchStart{Applied: 3})
	if u := recv(t, w2); u.Kind != update.Removed || len(u.Peers) > 0 || u.View.Kind != update.ViewUnchanged {
		t.Errorf("a removed node watching again gets %+v, want Removed and nothing else", u)
	}
	err := (&vpnapi.Dialer{SigningPrivKey: c.nodeKeys["n2"]}).Register(testContext(t), srv.info(), pub(newKey()))
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Register by a removed node: %v, want PermissionDenied", err)
	}
}

// TestWatchReportsWireGuardEndpoint: the endpoint a node reports when it
// starts watching is recorded (a changed WireGuard port).
func TestWatchReportsWireGuardEndpoint(t *testing.T) {
	c := newCluster(t)
	cfg, _ := c.config(t)
	srv := c.serve(t, cfg)
	n1, _ := c.reg.Peer(c.nodeIPs["n1"])
	pubEP := netip.MustParseAddrPort(n1.PublicEndpoint)
	moved := netip.AddrPortFrom(pubEP.Addr(), 51999).String()
	w := srv.watch(t, c.nodeKeys["n1"], core.WatchStart{WGEndpoint: moved})
	recv(t, w)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p, _ := c.reg.Peer(n1.VPNIP); p.WGEndpoint == moved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reported endpoint %s was not recorded", moved)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdminWatch: an admin on the VPN watches like a node: a full
// snapshot of every active peer, then the changes; the endpoint it reports
// is recorded wherever it is, and a roaming admin's endpoint is forgotten.
func TestAdminWatch(t *testing.T) {
	c := newCluster(t)
	cfg, live := c.config(t)
	srv := c.serve(t, cfg)
	const endpoint = "198.51.100.7:51821"
	w := srv.watch(t, c.adminKey, core.WatchStart{WGEndpoint: endpoint})
	full := recv(t, w)
	if full.Kind != update.Full {
		t.Fatalf("first update: %v, want a full snapshot", full.Kind)
	}
	waitEndpoint(t, c, c.adminIP, endpoint)
	n3 := c.addNode(t, "n3", "b")
	for u := recv(t, w); ; u = recv(t, w) {
		if u.Kind == update.Unchanged {
			continue
		}
		if diff := cmp.Diff([]records.Peer{onWire(n3)}, u.Peers, cmpOpts); u.Kind != update.Delta || diff != "" {
			t.Fatalf("after a join: %v (-want +got peers):\n%s", u.Kind, diff)
		}
		break
	}
	if watching, _, _ := live.state(); watching[c.adminIP] != 1 {
		t.Errorf("liveness: the admin is watching %d times, want 1", watching[c.adminIP])
	}
	w.Close()

	roaming := srv.watch(t, c.adminKey, core.WatchStart{Applied: c.reg.Revision(), Roaming: true})
	recv(t, roaming)
	waitEndpoint(t, c, c.adminIP, "")
}

// waitEndpoint waits until the registry records endpoint for ip.
func waitEndpoint(t *testing.T, c *cluster, ip netip.Addr, endpoint string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		p, _ := c.reg.Peer(ip)
		if p.WGEndpoint == endpoint {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has endpoint %q, want %q", ip, p.WGEndpoint, endpoint)
		}
	}
}

// TestCallersRefused: only active nodes, the coordinator and admins may
// call, over an authenticated connection, and only nodes and the
// coordinator register.
func TestCallersRefused(t *testing.T) {
	c := newCluster(t)
	reg := &fakeRegistrar{}
	cfg, _ := c.config(t)
	cfg.Registrar = reg
	srv := c.serve(t, cfg)
	ctx := testContext(t)
	t.Run("unknown", func(t *testing.T) {
		key := newKey()
		w, err := (&vpnapi.Dialer{SigningPrivKey: key}).Watch(ctx, srv.info(), core.WatchStart{})
		if err == nil {
			_, err = w.Recv()
			w.Close()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("WatchUpdates: %v, want PermissionDenied", err)
		}
		err = (&vpnapi.Dialer{SigningPrivKey: key}).Register(ctx, srv.info(), pub(newKey()))
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Register: %v, want PermissionDenied", err)
		}
	})
	t.Run("admin registers", func(t *testing.T) {
		err := (&vpnapi.Dialer{SigningPrivKey: c.adminKey}).Register(ctx, srv.info(), pub(newKey()))
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no reeve") {
			t.Errorf("Register: %v, want PermissionDenied (no reeve)", err)
		}
	})
	if calls := reg.called(); len(calls) != 0 {
		t.Errorf("the registrar was asked for %v", calls)
	}
	t.Run("wrong pin", func(t *testing.T) {
		info := srv.info()
		info.TLSPin = make([]byte, 32)
		w, err := (&vpnapi.Dialer{SigningPrivKey: c.nodeKeys["n1"]}).Watch(ctx, info, core.WatchStart{})
		if err == nil {
			_, err = w.Recv()
			w.Close()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("WatchUpdates: %v, want PermissionDenied", err)
		}
	})
	t.Run("no connection authentication", func(t *testing.T) {
		s := vpnapi.NewServer(vpnapi.Config{Registry: c.reg, Registrar: reg})
		if _, err := s.Register(ctx, &vpnapipb.RegisterRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Register: %v, want PermissionDenied", err)
		}
	})
}

// TestRegister: the handshake is run for the calling node's address (from
// its connection) with the key it offers, and a failure reaches the node.
func TestRegister(t *testing.T) {
	c := newCluster(t)
	ctx := testContext(t)
	key := pub(newKey())
	tests := []struct {
		name      string
		caller    string // node, or "coord"
		offer     []byte // default key
		noReg     bool
		regErr    error
		wantCode  codes.Code
		wantMsg   string
		wantCalls int
	}{
		{name: "short key", caller: "n1", offer: key[:31], wantCode: codes.InvalidArgument, wantMsg: "offered reeve key has 31 bytes, want 32"},
		{name: "no key", caller: "n1", offer: []byte{}, wantCode: codes.InvalidArgument, wantMsg: "offered reeve key has 0 bytes"},
		{name: "n1", caller: "n1", wantCalls: 1},
		{name: "n2", caller: "n2", wantCalls: 1},
		{name: "coordinator", caller: "coord", wantCalls: 1},
		{name: "handshake failed", caller: "n1", regErr: errors.New("registration failed: the reeve at 203.0.113.3:7445 did not sign the nonce"),
			wantCode: codes.PermissionDenied, wantMsg: "did not sign the nonce", wantCalls: 1},
		{name: "not served", caller: "n1", noReg: true, wantCode: codes.Unavailable, wantMsg: "registration is not served here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := &fakeRegistrar{err: tt.regErr}
			cfg, _ := c.config(t)
			cfg.Registrar = reg
			if tt.noReg {
				cfg.Registrar = nil
			}
			srv := c.serve(t, cfg)
			signing, ip := c.nodeKeys[tt.caller], c.nodeIPs[tt.caller]
			if tt.caller == "coord" {
				signing, ip = c.coordKey, c.coordIP
			}
			offer := key
			if tt.offer != nil {
				offer = tt.offer
			}
			err := (&vpnapi.Dialer{SigningPrivKey: signing}).Register(ctx, srv.info(), offer)
			if status.Code(err) != tt.wantCode || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Errorf("Register: %v, want code %v with %q", err, tt.wantCode, tt.wantMsg)
			}
			var want []registrarCall
			for range tt.wantCalls {
				want = append(want, registrarCall{IP: ip, Key: offer})
			}
			if diff := cmp.Diff(want, reg.called(), cmpOpts); diff != "" {
				t.Errorf("handshakes asked for (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookupSigningKey(t *testing.T) {
	c := newCluster(t)
	pending, err := c.reg.Reserve("192.0.2.99:7443", "n9", randomBytes(32), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	lookup := vpnapi.LookupSigningKey(c.reg)
	tests := []struct {
		name string
		key  []byte
		want string // identity; "" for refused
	}{
		{name: "n1", key: pub(c.nodeKeys["n1"]), want: c.nodeIPs["n1"].String()},
		{name: "n2", key: pub(c.nodeKeys["n2"]), want: c.nodeIPs["n2"].String()},
		{name: "coordinator", key: pub(c.coordKey), want: c.coordIP.String()},
		{name: "admin", key: pub(c.adminKey), want: c.adminIP.String()},
		{name: "unknown", key: pub(newKey())},
		{name: "pending node's wireguard key", key: pending.WGPubKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookup(tt.key)
			if (err == nil) != (tt.want != "") || got != tt.want {
				t.Errorf("LookupSigningKey = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestProtoRoundTrip(t *testing.T) {
	c := newCluster(t)
	_, peers := c.reg.Peers()
	peers = append(peers, records.Peer{Name: "v6", Role: records.RoleNode, VPNIP: netip.MustParseAddr("fd00::9"),
		WGEndpoint: "[2001:db8::9]:51820", WGPubKey: randomBytes(32), State: records.StateActive})
	for _, p := range peers {
		got, err := vpnapi.PeerFromProto(vpnapi.PeerToProto(p))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(onWire(p), got, cmpOpts); diff != "" {
			t.Errorf("peer %s through the wire (-want +got):\n%s", p.Name, diff)
		}
	}
	for _, bad := range []*vpnapipb.Peer{
		{Name: "n1", VpnIp: []byte{1, 2}, Role: vpnapipb.Role_NODE},
		{Name: "n1", VpnIp: []byte{203, 0, 113, 9}},
		{Name: "n1", VpnIp: []byte{203, 0, 113, 9}, Role: vpnapipb.Role_NODE, WgEndpoint: []byte{1, 2, 3}},
	} {
		if _, err := vpnapi.PeerFromProto(bad); err == nil || !strings.Contains(err.Error(), `peer "n1"`) {
			t.Errorf("PeerFromProto(%v) = %v, want an error naming the peer", bad, err)
		}
	}
	for _, u := range []update.Update{
		{Revision: 9, Kind: update.Full, Peers: []records.Peer{onWire(peers[0])}, View: update.ViewUpdate{Kind: update.ViewFull, Full: v1}},
		{Revision: 10, Kind: update.Delta, RemovedPeers: []netip.Addr{netip.MustParseAddr("203.0.113.4")}, View: update.ViewUpdate{Kind: update.ViewDelta, Slices: slices12}},
		{Revision: 11, Kind: update.Full, View: update.ViewUpdate{Kind: update.ViewFull}},
		{Revision: 11, Kind: update.Unchanged},
		{Revision: 12, Kind: update.Removed},
		{Revision: 13, Kind: update.Full, View: update.ViewUpdate{Kind: update.ViewFull}, HasSSHUsers: true, SSHUsers: testUsers},
		{Revision: 14, Kind: update.Delta, HasSSHUsers: true}, // every user removed
	} {
		msg, err := vpnapi.UpdateToProto(u, "n1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var back vpnapipb.WatchUpdate
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := vpnapi.UpdateFromProto(&back)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(u, got, cmpOpts); diff != "" {
			t.Errorf("%v update through the wire (-want +got):\n%s", u.Kind, diff)
		}
	}
}

// TestUpdateSize: the answer a node gets when one peer joins and its
// pastiche becomes reachable is small: a few hundred bytes, whatever the
// size of the cluster (the figure make bench-scale measures on the wire).
func TestUpdateSize(t *testing.T) {
	joined := records.Peer{Name: "n1234", Role: records.RoleNode, VPNIP: netip.MustParseAddr("198.18.4.210"),
		WGEndpoint: "192.0.2.210:51820", WGPubKey: randomBytes(32), State: records.StateActive}
	slice := view.Slice{Node: "n1234",
		Whitelist: []view.WhitelistEntry{{Endpoint: "pastiche@n77", Client: "pastiche@n1234", PubKey: randomBytes(32)}},
		Endpoints: []view.EndpointEntry{{Client: "pastiche@n77", Service: "pastiche", Endpoint: "pastiche@n1234", Address: "198.18.4.210:7450"}}}
	for _, tt := range []struct {
		name string
		u    update.Update
		max  int
	}{
		{"peer and slice", update.Update{Revision: 40001, Kind: update.Delta, Peers: []records.Peer{joined},
			View: update.ViewUpdate{Kind: update.ViewDelta, Slices: []view.Slice{slice}}}, 220},
		{"removal", update.Update{Revision: 40002, Kind: update.Delta, RemovedPeers: []netip.Addr{joined.VPNIP},
			View: update.ViewUpdate{Kind: update.ViewDelta, Slices: []view.Slice{{Node: "n1234"}}}}, 40},
		{"keepalive", update.Update{Revision: 40002, Kind: update.Unchanged}, 12},
	} {
		msg, err := vpnapi.UpdateToProto(tt.u, "n77")
		if err != nil {
			t.Fatal(err)
		}
		msg.KeepaliveS = 15
		if n := proto.Size(msg); n > tt.max {
			t.Errorf("%s: %d bytes, want at most %d", tt.name, n, tt.max)
		}
	}
}

// TestFullViewAnyOrder: a full view decodes to the same sorted view
// whatever the order of its slices on the wire (the coordinator sends them
// in name order, which spares the node a sort, but the node does not count
// on it).
func TestFullViewAnyOrder(t *testing.T) {
	u := update.Update{Revision: 9, Kind: update.Full, View: update.ViewUpdate{Kind: update.ViewFull, Full: v1}}
	for _, tc := range []struct {
		name    string
		reorder func([]*vpnapipb.Slice)
	}{
		{name: "as sent", reorder: func([]*vpnapipb.Slice) {}},
		{name: "reversed", reorder: slices.Reverse[[]*vpnapipb.Slice]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := vpnapi.UpdateToProto(u, "n1")
			if err != nil {
				t.Fatal(err)
			}
			if len(msg.GetView().GetSlices()) < 2 || msg.GetView().GetLocal() == nil {
				t.Fatalf("v1 on the wire has %d slices and local %v, want 2 and a local one", len(msg.GetView().GetSlices()), msg.GetView().GetLocal())
			}
			tc.reorder(msg.View.Slices)
			got, err := vpnapi.UpdateFromProto(msg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(u, got, cmpOpts); diff != "" {
				t.Errorf("full view (-want +got):\n%s", diff)
			}
		})
	}
}

// v1 is a view of node n1: entries shared with n2 and n3, entries between
// n1's own services, and a catalog.
var v1 = func() view.View {
	v := view.View{
		Whitelist: []view.WhitelistEntry{
			{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: []byte("k2")},
			{Endpoint: "pastiche@n1", Client: "pastiche@n3", PubKey: []byte("k3")},
			{Endpoint: "ledger@n1", Client: "billing@n1", PubKey: []byte("kb")},
		},
		Endpoints: []view.EndpointEntry{
			{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n2", Address: "203.0.113.4:7450"},
			{Client: "billing@n1", Service: "ledger", Endpoint: "ledger@n1", Address: "203.0.113.3:9000"},
		},
		Catalog: []view.CatalogEntry{{Client: "billing@n1", Service: "ledger"}, {Client: "pastiche@n1", Service: "pastiche"}},
	}
	v.Sort()
	return v
}()

// slices12 replace n1's entries with n2 and drop those with n3.
var slices12 = []view.Slice{
	{Node: "n2",
		Whitelist: []view.WhitelistEntry{{Endpoint: "pastiche@n1", Client: "pastiche@n2", PubKey: []byte("k2b")}},
		Endpoints: []view.EndpointEntry{{Client: "pastiche@n1", Service: "pastiche", Endpoint: "pastiche@n2", Address: "203.0.113.4:7451"}}},
	{Node: "n3"},
}

// TestKeepaliveDue: a node's keepalive goes at its slot of the period
// (a tick fixed by its VPN IP), the first half a keepalive or more after
// the last message.
func TestKeepaliveDue(t *testing.T) {
	period := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC) // a multiple of 30 s since the epoch
	for _, tc := range []struct {
		name      string
		lastSent  time.Time
		keepalive time.Duration
		slot      time.Duration
		want      time.Time
	}{
		{"idle: one keepalive a period", period.Add(7 * time.Second), 30 * time.Second, 7 * time.Second, period.Add(37 * time.Second)},
		{"slot later in the period", period.Add(2 * time.Second), 30 * time.Second, 20 * time.Second, period.Add(20 * time.Second)},
		{"slot too soon: the next period's", period.Add(10 * time.Second), 30 * time.Second, 20 * time.Second, period.Add(50 * time.Second)},
		{"half a keepalive exactly", period.Add(5 * time.Second), 30 * time.Second, 20 * time.Second, period.Add(20 * time.Second)},
		{"short keepalive", period.Add(250 * time.Millisecond), time.Second, 300 * time.Millisecond, period.Add(1300 * time.Millisecond)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := vpnapi.KeepaliveDue(tc.lastSent, tc.keepalive, tc.slot); !got.Equal(tc.want) {
				t.Errorf("KeepaliveDue(%v, %v, %v) = %v, want %v", tc.lastSent.Format(time.StampMilli), tc.keepalive, tc.slot, got.Format(time.StampMilli), tc.want.Format(time.StampMilli))
			}
		})
	}
}

// TestKeepaliveSlot: the slots are ticks of the period, and consecutive
// VPN IPs fill them evenly.
func TestKeepaliveSlot(t *testing.T) {
	for _, tc := range []struct {
		keepalive, tick time.Duration
	}{{30 * time.Second, time.Second}, {2 * time.Second, 200 * time.Millisecond}} {
		t.Run(tc.keepalive.String(), func(t *testing.T) {
			n := int(tc.keepalive / tc.tick)
			count := map[time.Duration]int{}
			ip := netip.MustParseAddr("203.0.113.1")
			for range 3 * n {
				s := vpnapi.KeepaliveSlot(ip, tc.keepalive)
				if s < 0 || s >= tc.keepalive || s%tc.tick != 0 {
					t.Fatalf("slot of %s: %v, want a multiple of %v below %v", ip, s, tc.tick, tc.keepalive)
				}
				count[s]++
				ip = ip.Next()
			}
			for s, c := range count {
				if c != 3 {
					t.Errorf("slot %v has %d of %d consecutive IPs, want 3", s, c, 3*n)
				}
			}
			if len(count) != n {
				t.Errorf("%d slots used, want %d", len(count), n)
			}
		})
	}
}
