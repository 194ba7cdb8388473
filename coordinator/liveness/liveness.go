// Package liveness tells which peers are online, from their watches: a
// node is online while its watch is open and it reports (it answers each
// keepalive); it goes offline Grace after its watch closed without another
// one opening, or when it left a message unanswered for Silence. A node
// that vanishes without closing its connection (SIGKILL, which takes its
// WireGuard interface along, or its machine gone) has its watch closed by
// the coordinator's kernel (vpnapi.ServerDeadAfter); Silence is for a
// node whose fabricd hangs while its kernel keeps the connection up. It
// counts from a message sent, not from the last report: a coordinator too
// busy to send its keepalives (thousands of nodes joining) does not take
// its nodes for silent. Only the changes between online and offline are
// recorded in the registry (one change-log entry each), by the coordinator
// that saw them; the time a node was last seen
// and the revision it applied live in memory, rebuilt from the nodes'
// reports after a restart.
//
// Several coordinators: each beats into the shared store every few
// seconds (the revision it applied and its watchers', outside the change
// log), and reads the others' beats for the peers it does not see itself.
// A coordinator whose beat has not changed for OfflineAfter, as this one's
// clock measures it (the coordinators' clocks need not agree), is shown
// offline. The leader (Config.Leader, elected in etcd) then records
// offline the peers it had seen online, unless they came online through
// another; the registry records that only if it still holds, so a second
// leader for a moment changes nothing. A coordinator that finds a peer it
// sees online recorded offline records it online again.
package liveness

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
)

// Defaults.
const (
	// DefaultOfflineAfter is how long after the beat of a coordinator
	// stopped changing it and the peers only it saw are shown offline,
	// and how long after a restart a peer recorded online that does not
	// watch again stays so.
	DefaultOfflineAfter = 25 * time.Second
	// DefaultSilence is how long a peer whose watch is open may leave a
	// message unanswered before it is shown offline: vpnapi.Silence of
	// the default keepalive (vpnapi.DefaultKeepalive, 30 s).
	DefaultSilence = 65 * time.Second
	// DefaultGrace is how long a peer whose watch closed stays online,
	// so that a reconnect does not flap it.
	DefaultGrace = 3 * time.Second
	// DefaultBeat is how often a coordinator sharing its store beats.
	DefaultBeat = 5 * time.Second
)

// Recorder records liveness changes and beats (coordinator/registry).
type Recorder interface {
	SetLiveness(ip netip.Addr, online bool, at, lastSeen time.Time, by string) error
	ExpireLiveness(ip netip.Addr, gone string, at time.Time) error
	Liveness() map[netip.Addr]registry.Liveness
	Peer(ip netip.Addr) (records.Peer, bool)
	Peers() (uint64, []records.Peer)
	WriteBeat(ip netip.Addr, b registry.Beat) error
	Beats() (map[netip.Addr]registry.Beat, error)
}

// Config tunes a Tracker.
type Config struct {
	Registry Recorder
	// Self and SelfName are this coordinator's VPN IP and name.
	Self     netip.Addr
	SelfName string
	// Shared is set when other coordinators share the registry's store:
	// the tracker then beats and reads their beats.
	Shared       bool
	OfflineAfter time.Duration
	Silence      time.Duration
	Grace        time.Duration
	Beat         time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Applied, if set, learns every revision a peer reports it applied.
	Applied func(ip netip.Addr, rev uint64)
	// Current, if set, says up to which revision a peer answered up to
	// after misses nothing (coordinator/feed: the changes that do not
	// concern a node do not wake its watch).
	Current func(ip netip.Addr, after uint64) uint64
	// Leader, if set, says whether this coordinator is the one that
	// records offline the peers of a coordinator that stopped beating;
	// nil: this one does.
	Leader Leader
}

// Leader says whether this coordinator leads (coordinator.Leadership).
type Leader interface{ Leading() bool }

// Tracker follows the peers' liveness. It is safe for concurrent use.
type Tracker struct {
	cfg Config

	mu    sync.Mutex
	peers map[netip.Addr]*peer
	beats map[netip.Addr]registry.Beat // the other coordinators', last read
	// beatChanged is when this tracker saw each coordinator's beat change.
	beatChanged map[netip.Addr]time.Time
	// recordMu orders the registry writes of each peer, each of which
	// records the state of the peer as it is when written. The writes of
	// different peers run at once, and the registry commits them
	// together.
	recordMu [64]sync.Mutex
}

// peer is what the tracker knows of one peer.
type peer struct {
	watching   int
	closedAt   time.Time
	lastSeen   time.Time
	online     bool // as recorded in the registry by this coordinator
	applied    uint64
	sent       uint64 // the revision the peer was sent everything up to
	contentRev uint64 // the revision of the last answer it had to apply
	// unanswered is when the oldest message sent since its last report
	// was sent (zero: none).
	unanswered   time.Time
	handshakeAge time.Duration
	self         bool // the coordinator itself: always online
}

// New returns a tracker starting from what the registry recorded: a peer
// this coordinator recorded online that does not report goes offline
// OfflineAfter from now.
func New(cfg Config) *Tracker {
	if cfg.OfflineAfter <= 0 {
		cfg.OfflineAfter = DefaultOfflineAfter
	}
	if cfg.Silence <= 0 {
		cfg.Silence = DefaultSilence
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Beat <= 0 {
		cfg.Beat = DefaultBeat
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Tracker{cfg: cfg, peers: map[netip.Addr]*peer{}, beats: map[netip.Addr]registry.Beat{}, beatChanged: map[netip.Addr]time.Time{}}
	now := cfg.Now()
	for ip, l := range cfg.Registry.Liveness() {
		if l.By != cfg.SelfName && l.By != "" {
			continue // another coordinator's to follow
		}
		p := &peer{online: l.Online, lastSeen: l.LastSeen, handshakeAge: -1}
		if l.Online {
			p.lastSeen, p.closedAt = now, now.Add(cfg.OfflineAfter-cfg.Grace)
		}
		t.peers[ip] = p
	}
	return t
}

func (t *Tracker) peer(ip netip.Addr) *peer {
	p := t.peers[ip]
	if p == nil {
		p = &peer{handshakeAge: -1}
		t.peers[ip] = p
	}
	return p
}

// Watching marks ip as watching until stop is called.
func (t *Tracker) Watching(ip netip.Addr) (stop func()) {
	t.mu.Lock()
	t.peer(ip).watching++
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			p := t.peer(ip)
			p.watching--
			p.closedAt = t.cfg.Now()
		})
	}
}

// Report records a report of ip; a peer that was offline comes online.
func (t *Tracker) Report(ip netip.Addr, applied uint64, handshakeAge time.Duration) {
	now := t.cfg.Now()
	t.mu.Lock()
	p := t.peer(ip)
	p.lastSeen, p.handshakeAge, p.unanswered = now, handshakeAge, time.Time{}
	moved := applied != p.applied
	p.applied = applied
	comeOnline := !p.online
	p.online = true
	t.mu.Unlock()
	if comeOnline {
		t.record(ip)
	}
	if moved && t.cfg.Applied != nil {
		t.cfg.Applied(ip, applied)
	}
}

// Sent records that ip is sent a message carrying everything up to rev,
// which it answers; content says whether it has anything to apply.
func (t *Tracker) Sent(ip netip.Addr, rev uint64, content bool) {
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peer(ip)
	p.sent = rev
	if content {
		p.contentRev = rev
	}
	if p.unanswered.IsZero() {
		p.unanswered = now
	}
}

// Passed records that ip misses nothing up to rev, though it was sent
// nothing.
func (t *Tracker) Passed(ip netip.Addr, rev uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.peer(ip).sent = rev
}

// Self records the revision the coordinator itself applied.
func (t *Tracker) Self(ip netip.Addr, rev uint64) {
	t.mu.Lock()
	p := t.peer(ip)
	p.self, p.applied, p.sent, p.contentRev, p.lastSeen = true, rev, rev, rev, t.cfg.Now()
	comeOnline := !p.online
	p.online = true
	t.mu.Unlock()
	if comeOnline {
		t.record(ip)
	}
}

// record writes the liveness of ip as it is now to the registry (which
// ignores a state it already has). A peer removed meanwhile is unknown
// to the registry and forgotten here.
func (t *Tracker) record(ip netip.Addr) {
	mu := &t.recordMu[ipHash(ip)%uint64(len(t.recordMu))]
	mu.Lock()
	defer mu.Unlock()
	t.mu.Lock()
	p, ok := t.peers[ip]
	if !ok {
		t.mu.Unlock()
		return
	}
	online, lastSeen := p.online, p.lastSeen
	t.mu.Unlock()
	if err := t.cfg.Registry.SetLiveness(ip, online, t.cfg.Now(), lastSeen, t.cfg.SelfName); errors.Is(err, records.ErrUnknownPeer) {
		t.Forget(ip)
	}
}

// Run checks every second which peers went offline and, with a shared
// store, beats and reads the other coordinators' beats, until ctx ends.
func (t *Tracker) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastBeat time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Check()
			if t.cfg.Shared && t.cfg.Now().Sub(lastBeat) >= t.cfg.Beat {
				lastBeat = t.cfg.Now()
				t.beat()
			}
		}
	}
}

// Check marks offline the peers whose watch closed or that leave a
// message unanswered.
func (t *Tracker) Check() {
	now := t.cfg.Now()
	var offline []netip.Addr
	t.mu.Lock()
	for ip, p := range t.peers {
		if !p.online || p.self {
			continue
		}
		silent := !p.unanswered.IsZero() && now.Sub(p.unanswered) > t.cfg.Silence
		if silent || (p.watching == 0 && now.Sub(p.closedAt) > t.cfg.Grace) {
			p.online = false
			offline = append(offline, ip)
		}
	}
	t.mu.Unlock()
	for _, ip := range offline {
		t.record(ip)
	}
}

// beat writes this coordinator's beat, reads the others', records again
// the peers whose recorded liveness is not what it sees, and, if it leads,
// records offline what a coordinator that stopped beating had seen online.
func (t *Tracker) beat() {
	now := t.cfg.Now()
	b := registry.Beat{At: now, Watchers: map[netip.Addr]uint64{}}
	seen := map[netip.Addr]bool{} // online as this coordinator sees them
	t.mu.Lock()
	for ip, p := range t.peers {
		switch {
		case p.self:
			b.Applied = t.statusLocked(ip, p).Applied
		case p.online:
			b.Watchers[ip] = t.statusLocked(ip, p).Applied
		}
		seen[ip] = p.online
	}
	t.mu.Unlock()
	_ = t.cfg.Registry.WriteBeat(t.cfg.Self, b) // retried at the next beat
	beats, err := t.cfg.Registry.Beats()
	if err != nil {
		return
	}
	t.mu.Lock()
	for ip, b := range beats {
		if prev, ok := t.beats[ip]; !ok || !prev.At.Equal(b.At) {
			t.beatChanged[ip] = now
		}
	}
	t.beats = beats
	t.mu.Unlock()
	recorded := t.cfg.Registry.Liveness()
	for ip, online := range seen {
		l, ok := recorded[ip]
		// Online but recorded offline (expired while this coordinator saw
		// it) or not at all, or gone offline here but recorded online by
		// this coordinator: a record that failed (the store had no
		// quorum) or was overtaken is written again.
		if (online && (!ok || !l.Online)) || (!online && ok && l.Online && l.By == t.cfg.SelfName) {
			t.record(ip)
		}
	}
	if t.cfg.Leader != nil && !t.cfg.Leader.Leading() {
		return
	}
	alive := map[string]bool{t.cfg.SelfName: true}
	_, peers := t.cfg.Registry.Peers()
	t.mu.Lock()
	for _, p := range peers {
		if _, ok := beats[p.VPNIP]; ok && p.Role == records.RoleCoordinator && t.beatingLocked(p.VPNIP, now) {
			alive[p.Name] = true
		}
	}
	t.mu.Unlock()
	var expiring sync.WaitGroup // at once: the registry commits them together
	for ip, l := range recorded {
		if l.Online && l.By != "" && !alive[l.By] {
			expiring.Go(func() { _ = t.cfg.Registry.ExpireLiveness(ip, l.By, now) })
		}
	}
	expiring.Wait()
}

// beatingLocked reports whether the beat of the coordinator at ip changed
// within OfflineAfter, by this tracker's clock.
func (t *Tracker) beatingLocked(ip netip.Addr, now time.Time) bool {
	changed, ok := t.beatChanged[ip]
	return ok && now.Sub(changed) <= t.cfg.OfflineAfter
}

// Status is what the tracker knows of a peer.
type Status struct {
	Online   bool
	LastSeen time.Time
	// Applied is the revision the peer applied, counting the revisions
	// after it that had nothing for it once it applied all it was sent.
	Applied uint64
	// CoordinatorHandshakeAge is the age of the peer's last WireGuard
	// handshake with the coordinator as it reported it (-1: unknown).
	CoordinatorHandshakeAge time.Duration
	// Watching names the coordinator whose watch the peer has open: this
	// one, or another whose last beat lists the peer ("": none known).
	Watching string
}

// Status returns what the tracker knows of ip, or, for a peer another
// coordinator sees, what that coordinator's beat and records say.
func (t *Tracker) Status(ip netip.Addr) Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[ip]; ok && (p.self || p.online || p.watching > 0) {
		st := t.statusLocked(ip, p)
		if p.watching > 0 {
			st.Watching = t.cfg.SelfName
		}
		return st
	}
	if b, ok := t.beats[ip]; ok { // another coordinator
		return Status{Online: t.beatingLocked(ip, t.cfg.Now()), LastSeen: b.At, Applied: b.Applied, CoordinatorHandshakeAge: -1}
	}
	l := t.cfg.Registry.Liveness()[ip]
	st := Status{Online: l.Online, LastSeen: l.LastSeen, CoordinatorHandshakeAge: -1}
	for co, b := range t.beats {
		if applied, ok := b.Watchers[ip]; ok {
			st.Applied = applied
			if rec, known := t.cfg.Registry.Peer(co); known && t.cfg.Now().Sub(b.At) <= t.cfg.OfflineAfter {
				st.Watching = rec.Name
			}
		}
	}
	if p, ok := t.peers[ip]; ok && !st.Online {
		st.LastSeen, st.Applied = p.lastSeen, t.statusLocked(ip, p).Applied
	}
	return st
}

func (t *Tracker) statusLocked(ip netip.Addr, p *peer) Status {
	applied := p.applied
	if p.applied >= p.contentRev {
		// It applied all it had to: it is at the revision it was sent,
		// and at the later ones that do not concern it.
		applied = max(applied, p.sent)
		// The coordinator's own loop is not woken by what does not
		// concern it either.
		if t.cfg.Current != nil {
			applied = max(applied, t.cfg.Current(ip, applied))
		}
	}
	return Status{Online: p.online, LastSeen: p.lastSeen, Applied: applied, CoordinatorHandshakeAge: p.handshakeAge}
}

// Forget drops what the tracker knows of ip (a removed peer).
func (t *Tracker) Forget(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.peers, ip)
}

// ipHash spreads VPN IPs over the record locks.
func ipHash(ip netip.Addr) uint64 {
	b := ip.As16()
	var h uint64
	for _, c := range b[8:] {
		h = h<<8 | uint64(c)
	}
	return h
}
