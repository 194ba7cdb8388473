package httpsig

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Defaults of DateSourceConfig.
const (
	DefaultMaxAhead           = 10 * time.Second
	DefaultDateSourceCapacity = 1 << 16
)

// DateSourceConfig configures a DateSource.
type DateSourceConfig struct {
	// MaxAhead is how far ahead of the clock a handed-out date may be
	// before the caller is told to wait. Keep it well under the endpoints'
	// skew window. Zero or negative means DefaultMaxAhead.
	MaxAhead time.Duration
	// Capacity bounds the number of (target, digest) pairs remembered.
	// Zero or negative means DefaultDateSourceCapacity.
	Capacity int
}

// DateSource hands out request dates for one client key. ed25519 is
// deterministic and dates have second resolution, so two identical requests
// (same target, same body) signed by the same key in the same second would
// carry the same signature and the second would be refused as a replay.
// DateSource gives each (target, digest) a date strictly later than the last
// one it handed out for that pair: the current second, or the last date plus
// one second. A burst of identical requests thus runs ahead of the clock;
// beyond MaxAhead, Next asks the caller to wait.
//
// Memory is bounded by Capacity: pairs whose last date is in the past are
// forgotten (the current second is later anyway); if that is not enough,
// all pairs are forgotten, and a pair not remembered gets a date after the
// latest date forgotten among the pairs of its bucket (one of
// dateBuckets, by the pair's hash), which keeps the guarantee. Pairs run
// ahead of the clock in a burst of identical calls, and by minutes for
// calls to an endpoint that started a moment ago (it accepts only dates
// after its start plus its skew window): the registrar's callback to
// every joining node is such a call. With one watermark for every pair,
// and 4,096 pairs, the forgetting at the 4,097th registration of a mass
// join dated every later call minutes ahead, and they all slept until
// their deadline (fabric-scale at 10,000 nodes).
//
// A DateSource is safe for concurrent use. Use one per client key, shared
// by all connections that sign with it.
type DateSource struct {
	mu        sync.Mutex
	maxAhead  time.Duration
	capacity  int
	last      map[[sha256.Size]byte]int64 // pair -> last date handed out (unix seconds)
	forgotten []int64                     // by bucket: the latest date among its forgotten pairs (made at the first forgetting)
}

// dateBuckets is the number of watermarks of forgotten pairs.
const dateBuckets = 1 << 16

func bucket(key [sha256.Size]byte) int {
	return int(uint16(key[0])<<8|uint16(key[1])) % dateBuckets
}

// NewDateSource returns a DateSource with cfg's defaults filled in.
func NewDateSource(cfg DateSourceConfig) *DateSource {
	s := &DateSource{maxAhead: cfg.MaxAhead, capacity: cfg.Capacity, last: make(map[[sha256.Size]byte]int64)}
	if s.maxAhead <= 0 {
		s.maxAhead = DefaultMaxAhead
	}
	if s.capacity <= 0 {
		s.capacity = DefaultDateSourceCapacity
	}
	return s
}

// Next returns the date for a request to target whose digest header is
// digest, at time now. If wait is positive the date is more than MaxAhead
// ahead of now: the caller should wait that long before sending (the date
// is reserved either way).
func (s *DateSource) Next(target, digest string, now time.Time) (date time.Time, wait time.Duration) {
	key := sha256.Sum256([]byte(target + "\n" + digest))
	sec := now.Unix()
	s.mu.Lock()
	if len(s.last) >= s.capacity {
		s.shrink(sec)
	}
	d := sec
	last, ok := s.last[key]
	if !ok && s.forgotten != nil {
		last = s.forgotten[bucket(key)]
	}
	if last >= d {
		d = last + 1
	}
	s.last[key] = d
	s.mu.Unlock()
	date = time.Unix(d, 0)
	return date, max(date.Sub(now)-s.maxAhead, 0)
}

// Len is the number of (target, digest) pairs remembered.
func (s *DateSource) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.last)
}

// shrink forgets pairs whose last date is before sec; if more than half
// the capacity remains, it forgets all of them.
func (s *DateSource) shrink(sec int64) {
	for k, d := range s.last {
		if d < sec {
			delete(s.last, k)
		}
	}
	if len(s.last) <= s.capacity/2 {
		return
	}
	if s.forgotten == nil {
		s.forgotten = make([]int64, dateBuckets)
	}
	for k, d := range s.last {
		b := bucket(k)
		s.forgotten[b] = max(s.forgotten[b], d)
	}
	clear(s.last)
}
