package authconn

import (
	"container/list"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Defaults of the caps on handshakes in progress (ServerConfig).
const (
	DefaultMaxPendingHandshakes      = 1024
	DefaultMaxPendingHandshakesPerIP = 64
	// DefaultEvictAfter is the age from which a handshake in progress
	// may be dropped for a newcomer when the total cap is full.
	DefaultEvictAfter = 2 * time.Second
)

// Reasons of the caps, as logged.
const (
	reasonTooManyFromIP = "too many handshakes in progress from this address"
	reasonTooMany       = "too many handshakes in progress"
	reasonEvicted       = "dropped for a newer connection: too many handshakes in progress"
)

// Refusals of a connection before its TLS handshake.
var (
	errTooManyFromIP = errors.New(reasonTooManyFromIP)
	errTooMany       = errors.New(reasonTooMany)
)

// pendingHandshakes caps the handshakes in progress: at most perIP from one
// source address, and at most total in all. A connection over its
// address's cap is refused at once, before any TLS byte. One over the
// total cap drops a handshake in progress to make room: the oldest if it
// has been in progress for evictAfter, else the oldest of a source with
// several in progress (a flood from a few dozen addresses), so a flood of
// connections that never finish keeps a newcomer out for evictAfter at
// most, and one from a few sources not at all. When every handshake in
// progress is young and alone from its source (thousands of real nodes
// redialling at once), the newcomer is refused instead, before any TLS
// byte, and its client retries later. Dropping the oldest at once turned a
// reconnect storm into a livelock: with 10,000 nodes redialling a busy
// coordinator, over 2,000 connections a second came in, each handshake
// had half a second before it was the oldest and dropped, none finished,
// and the nodes redialled again (fabric-scale, 20,000 dropped every 10 s
// for minutes). Without the caps only file descriptors bound the work of
// unauthenticated connections, each held for up to the handshake timeout.
type pendingHandshakes struct {
	total, perIP int
	evictAfter   time.Duration

	mu     sync.Mutex
	byIP   map[string]int
	oldest list.List // of *pendingConn, oldest first
}

// pendingConn is a connection whose handshake is in progress.
type pendingConn struct {
	conn    net.Conn
	ip      string
	since   time.Time
	elem    *list.Element // nil once released or evicted
	evicted bool
}

func newPendingHandshakes(total, perIP int, evictAfter time.Duration) *pendingHandshakes {
	return &pendingHandshakes{total: total, perIP: perIP, evictAfter: evictAfter, byIP: make(map[string]int)}
}

// admit counts conn's handshake, or refuses it (errTooManyFromIP,
// errTooMany). The caller releases an admitted one when its handshake
// ends.
func (p *pendingHandshakes) admit(conn net.Conn) (*pendingConn, error) {
	ip := sourceIP(conn)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byIP[ip] >= p.perIP {
		return nil, errTooManyFromIP
	}
	for p.oldest.Len() >= p.total {
		old := p.evictableLocked(now)
		if old == nil {
			return nil, errTooMany
		}
		p.removeLocked(old)
		old.evicted = true
		_ = old.conn.Close() // its handshake fails now
	}
	pc := &pendingConn{conn: conn, ip: ip, since: now}
	pc.elem = p.oldest.PushBack(pc)
	p.byIP[ip]++
	return pc, nil
}

// evictableLocked is the handshake to drop for a newcomer when the cap is
// full: the oldest, if it started evictAfter ago, else the oldest of a
// source with several in progress, else none. p.mu is held.
func (p *pendingHandshakes) evictableLocked(now time.Time) *pendingConn {
	if old := p.oldest.Front().Value.(*pendingConn); now.Sub(old.since) >= p.evictAfter {
		return old
	}
	for e := p.oldest.Front(); e != nil; e = e.Next() {
		if pc := e.Value.(*pendingConn); p.byIP[pc.ip] > 1 {
			return pc
		}
	}
	return nil
}

// release ends the count of pc's handshake; it reports whether pc had
// been evicted.
func (p *pendingHandshakes) release(pc *pendingConn) (evicted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc.elem != nil {
		p.removeLocked(pc)
	}
	return pc.evicted
}

func (p *pendingHandshakes) removeLocked(pc *pendingConn) {
	p.oldest.Remove(pc.elem)
	pc.elem = nil
	if p.byIP[pc.ip]--; p.byIP[pc.ip] <= 0 {
		delete(p.byIP, pc.ip)
	}
}

// counts returns the handshakes in progress, in all and from ip.
func (p *pendingHandshakes) counts(ip string) (total, fromIP int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oldest.Len(), p.byIP[ip]
}

// sourceIP is the IP part of conn's remote address (the whole address if
// it has no port).
func sourceIP(conn net.Conn) string {
	addr := conn.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// Defaults of the sampling of rejection logs.
const (
	rejectionLogWindow = 10 * time.Second
	rejectionLogBurst  = 5
)

// rejectionLog logs rejected connections without letting a flood of them
// flood the log: per reason, the first rejectionLogBurst of each window of
// rejectionLogWindow are logged one by one, and the others are counted and
// logged as one line when the window ends.
type rejectionLog struct {
	log    *slog.Logger
	window time.Duration
	burst  int

	mu      sync.Mutex
	reasons map[string]*reasonWindow
	timer   *time.Timer // ends the current window; nil when none is open
}

type reasonWindow struct {
	logged, dropped int
	lastRemote      string
}

func newRejectionLog(log *slog.Logger) *rejectionLog {
	return &rejectionLog{log: log, window: rejectionLogWindow, burst: rejectionLogBurst, reasons: make(map[string]*reasonWindow)}
}

// rejected logs (or counts) one rejected connection.
func (l *rejectionLog) rejected(remote, reason string, cause error) {
	l.mu.Lock()
	w := l.reasons[reason]
	if w == nil {
		w = &reasonWindow{}
		l.reasons[reason] = w
	}
	if l.timer == nil {
		l.timer = time.AfterFunc(l.window, l.endWindow)
	}
	logIt := w.logged < l.burst
	if logIt {
		w.logged++
	} else {
		w.dropped++
		w.lastRemote = remote
	}
	l.mu.Unlock()
	if !logIt {
		return
	}
	attrs := []any{"remote", remote, "reason", reason}
	if cause != nil {
		attrs = append(attrs, "err", cause.Error())
	}
	l.log.Warn("authconn: rejected connection", attrs...)
}

// endWindow logs how many rejections of each reason were not logged in the
// window that ends, and starts afresh.
func (l *rejectionLog) endWindow() {
	l.mu.Lock()
	reasons := l.reasons
	l.reasons, l.timer = make(map[string]*reasonWindow), nil
	l.mu.Unlock()
	for reason, w := range reasons {
		if w.dropped > 0 {
			l.log.Warn("authconn: more rejected connections, not logged one by one",
				"reason", reason, "count", w.dropped, "logged", w.logged, "window", l.window.String(), "lastRemote", w.lastRemote)
		}
	}
}
