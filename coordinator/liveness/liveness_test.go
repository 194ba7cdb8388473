package liveness

import (
	"bytes"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/vpnapi"
)

func TestDefaultSilence(t *testing.T) {
	if got := vpnapi.Silence(vpnapi.DefaultKeepalive); got != DefaultSilence {
		t.Errorf("vpnapi.Silence(vpnapi.DefaultKeepalive %v) = %v, DefaultSilence %v", vpnapi.DefaultKeepalive, got, DefaultSilence)
	}
}

// clock is a test clock that moves only when told.
type clock struct{ now atomic.Pointer[time.Time] }

func newClock(at time.Time) *clock {
	c := &clock{}
	c.set(at)
	return c
}

func (c *clock) Now() time.Time      { return *c.now.Load() }
func (c *clock) set(t time.Time)     { c.now.Store(&t) }
func (c *clock) add(d time.Duration) { c.set(c.Now().Add(d)) }
func (l *leader) Leading() bool      { return l.leading.Load() }
func key(b byte) []byte              { return bytes.Repeat([]byte{b}, 32) }
func endpoint(last byte) string {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, last}), 7443).String()
}
func wgEndpoint(last byte) string {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, last}), 51820).String()
}
func activated(name string, b byte) records.Activated {
	return records.Activated{Name: name, Horde: "h", WGEndpoint: wgEndpoint(b), WGPubKey: key(b), SigningPubKey: key(b + 1)}
}

type leader struct{ leading atomic.Bool }

// sharedCluster is a cluster of two coordinators, c1 and c2, on one
// store, and one node; each coordinator has its registry.
type sharedCluster struct {
	reg1, reg2     *registry.Registry
	c1, c2, nodeIP netip.Addr
}

func newSharedCluster(t *testing.T) *sharedCluster {
	t.Helper()
	st := store.NewMem()
	reg1, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	out, err := reg1.Init(records.Cluster{ID: "c", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")},
		records.Peer{Name: "c1", PublicEndpoint: endpoint(1), WGEndpoint: wgEndpoint(1), WGPubKey: key(0x10), SigningPubKey: key(0x11)}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &sharedCluster{reg1: reg1, c1: out[0].VPNIP}
	c2, err := reg1.ReserveCoordinator(endpoint(2), "c2", key(0x20), key(0x21))
	if err != nil {
		t.Fatal(err)
	}
	co := activated("c2", 0x20)
	co.TLSPin = key(0x22)
	if _, err := reg1.Activate(c2.VPNIP, co); err != nil {
		t.Fatal(err)
	}
	node, err := reg1.Reserve(endpoint(3), "n1", key(0x30), key(0x31), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg1.Activate(node.VPNIP, activated("n1", 0x30)); err != nil {
		t.Fatal(err)
	}
	c.c2, c.nodeIP = c2.VPNIP, node.VPNIP
	if c.reg2, err = registry.Open(st); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *sharedCluster) tracker(t *testing.T, reg *registry.Registry, self netip.Addr, name string, now *clock, lead Leader) *Tracker {
	t.Helper()
	return New(Config{Registry: reg, Self: self, SelfName: name, Shared: true, Now: now.Now, Leader: lead})
}

// recorded is the node's liveness as reg holds it after catching up.
func recorded(t *testing.T, reg *registry.Registry, ip netip.Addr) registry.Liveness {
	t.Helper()
	if err := reg.CatchUp(); err != nil {
		t.Fatal(err)
	}
	return reg.Liveness()[ip]
}

// TestExpiry: a node online through c1 is recorded offline by the leader
// c2 once c1's beat stopped changing for OfflineAfter by c2's clock; c1's
// clock, an hour behind, does not make c2 expire it while c1 beats; a
// coordinator that does not lead expires nothing.
func TestExpiry(t *testing.T) {
	c := newSharedCluster(t)
	start := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock1, clock2 := newClock(start.Add(-time.Hour)), newClock(start)
	t1 := c.tracker(t, c.reg1, c.c1, "c1", clock1, nil)
	lead2 := &leader{}
	t2 := c.tracker(t, c.reg2, c.c2, "c2", clock2, lead2)
	t1.Self(c.c1, 1)
	t2.Self(c.c2, 1)
	stop := t1.Watching(c.nodeIP)
	defer stop()
	t1.Report(c.nodeIP, 1, -1)
	if l := recorded(t, c.reg2, c.nodeIP); !l.Online || l.By != "c1" {
		t.Fatalf("after its report: %+v, want online by c1", l)
	}
	for range 10 { // c1 beats for 50 s of c2's clock; its beats are an hour old
		t1.beat()
		if err := c.reg2.CatchUp(); err != nil {
			t.Fatal(err)
		}
		lead2.leading.Store(true)
		t2.beat()
		clock1.add(5 * time.Second)
		clock2.add(5 * time.Second)
		t1.Report(c.nodeIP, 1, -1)
	}
	if l := recorded(t, c.reg2, c.nodeIP); !l.Online {
		t.Fatalf("c1 beats, yet the node is %+v", l)
	}
	if st := t2.Status(c.c1); !st.Online {
		t.Errorf("c2 shows beating c1 %+v, want online", st)
	}
	// c1 stops. c2, not leading, expires nothing.
	lead2.leading.Store(false)
	clock2.add(DefaultOfflineAfter + time.Second)
	t2.beat()
	if l := recorded(t, c.reg2, c.nodeIP); !l.Online {
		t.Errorf("a coordinator that does not lead expired the node: %+v", l)
	}
	if st := t2.Status(c.c1); st.Online {
		t.Errorf("c2 shows silent c1 %+v, want offline", st)
	}
	lead2.leading.Store(true)
	t2.beat()
	if l := recorded(t, c.reg2, c.nodeIP); l.Online || l.By != "c1" {
		t.Errorf("the leader did not expire the node of silent c1: %+v", l)
	}
}

// TestExpiredWhileSeen: a coordinator that sees a node online finds it
// recorded offline (another coordinator took it for gone) and records it
// online again.
func TestExpiredWhileSeen(t *testing.T) {
	c := newSharedCluster(t)
	now := newClock(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC))
	t1 := c.tracker(t, c.reg1, c.c1, "c1", now, nil)
	t1.Self(c.c1, 1)
	stop := t1.Watching(c.nodeIP)
	defer stop()
	t1.Report(c.nodeIP, 1, -1)
	if err := c.reg2.CatchUp(); err != nil {
		t.Fatal(err)
	}
	if err := c.reg2.ExpireLiveness(c.nodeIP, "c1", now.Now()); err != nil {
		t.Fatal(err)
	}
	if l := recorded(t, c.reg1, c.nodeIP); l.Online {
		t.Fatalf("after the expiry: %+v", l)
	}
	t1.beat()
	if l := recorded(t, c.reg1, c.nodeIP); !l.Online || l.By != "c1" {
		t.Errorf("after c1's beat: %+v, want online by c1 again", l)
	}
}

// failingRecorder is a registry whose liveness records fail while fail is
// set, as with a store that lost its quorum.
type failingRecorder struct {
	*registry.Registry
	fail atomic.Bool
}

func (f *failingRecorder) SetLiveness(ip netip.Addr, online bool, at, lastSeen time.Time, by string) error {
	if f.fail.Load() {
		return errors.New("etcd has no quorum")
	}
	return f.Registry.SetLiveness(ip, online, at, lastSeen, by)
}

// TestFailedRecordRetried: a node that came online, and later went
// offline, while the store could not record it is recorded at the next
// beat once the store writes again.
func TestFailedRecordRetried(t *testing.T) {
	c := newSharedCluster(t)
	now := newClock(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC))
	rec := &failingRecorder{Registry: c.reg1}
	t1 := New(Config{Registry: rec, Self: c.c1, SelfName: "c1", Shared: true, Now: now.Now})
	t1.Self(c.c1, 1)
	rec.fail.Store(true)
	stop := t1.Watching(c.nodeIP)
	t1.Report(c.nodeIP, 1, -1)
	if l := recorded(t, c.reg1, c.nodeIP); l.Online {
		t.Fatalf("recorded %+v while the store failed", l)
	}
	rec.fail.Store(false)
	t1.beat()
	if l := recorded(t, c.reg1, c.nodeIP); !l.Online || l.By != "c1" {
		t.Fatalf("after the beat: %+v, want online by c1", l)
	}

	stop()
	now.add(DefaultGrace + time.Second)
	rec.fail.Store(true)
	t1.Check()
	if l := recorded(t, c.reg1, c.nodeIP); !l.Online {
		t.Fatalf("recorded %+v while the store failed", l)
	}
	rec.fail.Store(false)
	t1.beat()
	if l := recorded(t, c.reg1, c.nodeIP); l.Online {
		t.Errorf("after the beat: %+v, want offline", l)
	}
}

// TestAppliedCountsWhatDidNotConcernThePeer: a peer that applied all it
// was sent is at the revision the feed says it misses nothing up to, not
// further; one that has content to apply is at what it applied.
func TestAppliedCountsWhatDidNotConcernThePeer(t *testing.T) {
	c := newSharedCluster(t)
	current := uint64(0)
	tr := New(Config{Registry: c.reg1, Self: c.c1, SelfName: "c1", Now: newClock(time.Now()).Now,
		Current: func(ip netip.Addr, after uint64) uint64 { return max(after, current) }})
	defer tr.Watching(c.nodeIP)()
	tests := []struct {
		name            string
		sent, applied   uint64
		content         bool
		current, wantAt uint64
	}{
		{"applied what it was sent, later changes concerned it", 10, 10, true, 0, 10},
		{"applied what it was sent, later changes did not concern it", 10, 10, true, 14, 14},
		{"sent a revision with nothing for it", 12, 10, false, 0, 12},
		{"content not applied yet", 16, 12, true, 20, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			current = tt.current
			tr.Sent(c.nodeIP, tt.sent, tt.content)
			tr.Report(c.nodeIP, tt.applied, -1)
			if got := tr.Status(c.nodeIP).Applied; got != tt.wantAt {
				t.Errorf("applied = %d, want %d", got, tt.wantAt)
			}
		})
	}
}

// TestOffline: a watching node that answers every keepalive stays online,
// and so does one sent nothing (its coordinator too busy to send); one
// whose watch closed goes offline after Grace (a reconnect within it does
// not flap it), one that leaves a message unanswered with its watch open
// after Silence.
func TestOffline(t *testing.T) {
	const keepalive = 30 * time.Second // vpnapi.DefaultKeepalive
	tests := []struct {
		name string
		// run drives the node after it watched and reported once, and
		// checks; it returns the time it went silent or its watch
		// closed (or, for a node that stays online, the last check).
		run     func(tr *Tracker, now *clock, ip netip.Addr, stop func()) time.Time
		offline time.Duration // after the time run returned; 0: never
	}{
		{"answers every keepalive", func(tr *Tracker, now *clock, ip netip.Addr, _ func()) time.Time {
			for range 10 {
				now.add(keepalive)
				tr.Sent(ip, 1, false)
				now.add(time.Second)
				tr.Check()
				tr.Report(ip, 1, -1)
				tr.Check()
			}
			return now.Now()
		}, 0},
		{"sent nothing", func(tr *Tracker, now *clock, ip netip.Addr, _ func()) time.Time {
			for range 2 * DefaultSilence / time.Second {
				now.add(time.Second)
				tr.Passed(ip, 1)
				tr.Check()
			}
			return now.Now()
		}, 0},
		{"watch closed", func(tr *Tracker, now *clock, ip netip.Addr, stop func()) time.Time {
			stop()
			return now.Now()
		}, DefaultGrace},
		{"watch closed and opened again within the grace", func(tr *Tracker, now *clock, ip netip.Addr, stop func()) time.Time {
			stop()
			now.add(DefaultGrace / 2)
			tr.Watching(ip)
			tr.Report(ip, 1, -1)
			now.add(DefaultGrace)
			tr.Check()
			return now.Now()
		}, 0},
		{"leaves a message unanswered", func(tr *Tracker, now *clock, ip netip.Addr, _ func()) time.Time {
			now.add(keepalive)
			tr.Sent(ip, 1, false)
			sent := now.Now()
			now.add(keepalive) // a later one does not move the count
			tr.Sent(ip, 1, false)
			return sent
		}, DefaultSilence},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newSharedCluster(t)
			now := newClock(time.Now())
			tr := New(Config{Registry: c.reg1, Self: c.c1, SelfName: "c1", Now: now.Now})
			stop := tr.Watching(c.nodeIP)
			tr.Report(c.nodeIP, 1, -1)
			since := tt.run(tr, now, c.nodeIP, stop)
			if tt.offline == 0 {
				if st := tr.Status(c.nodeIP); !st.Online {
					t.Fatalf("status %+v, want online", st)
				}
				return
			}
			wentOffline := time.Duration(0)
			for now.Now().Sub(since) < 2*DefaultSilence {
				tr.Check()
				if !tr.Status(c.nodeIP).Online {
					wentOffline = now.Now().Sub(since)
					break
				}
				now.add(time.Second)
			}
			if wentOffline <= tt.offline || wentOffline > tt.offline+time.Second {
				t.Fatalf("offline %v after, want just after %v", wentOffline, tt.offline)
			}
			if l := recorded(t, c.reg1, c.nodeIP); l.Online {
				t.Errorf("recorded %+v, want offline", l)
			}
		})
	}
}
