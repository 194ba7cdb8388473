package httpsig

import (
	"container/heap"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"
)

// DefaultReplayCapacity is the default number of signatures a ReplayCache
// remembers.
const DefaultReplayCapacity = 1 << 16

// ReplayCache remembers accepted signatures (by their SHA-256) until their
// date leaves the skew window, so that the same signature is refused a
// second time. It is bounded: when full, it forgets all the signatures of
// the oldest date it holds and raises its floor to that date. From then on
// a signature dated at or before the floor is refused with
// ErrTooOldForReplayCache, so forgetting never lets a replay through
// (fail closed); clients whose clocks lag by more than the cache covers
// are refused until the cache drains.
//
// The floor also rises as time passes, to the last second that has left
// the window: if the endpoint's clock steps back, signatures it has already
// forgotten stay refused.
//
// A ReplayCache is safe for concurrent use.
type ReplayCache struct {
	mu       sync.Mutex
	capacity int
	seen     map[[sha256.Size]byte]int64 // signature hash -> date (unix seconds)
	byDate   map[int64][][sha256.Size]byte
	dates    dateHeap // the keys of byDate
	floor    int64    // dates <= floor are refused
	hasFloor bool
}

// NewReplayCache returns a cache of capacity signatures (at least 1).
func NewReplayCache(capacity int) *ReplayCache {
	return &ReplayCache{
		capacity: max(capacity, 1),
		seen:     make(map[[sha256.Size]byte]int64),
		byDate:   make(map[int64][][sha256.Size]byte),
	}
}

// Len is the number of signatures remembered.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// Floor is the date at or before which signatures are refused; ok is false
// while there is no floor.
func (c *ReplayCache) Floor() (floor time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Unix(c.floor, 0), c.hasFloor
}

// Remember records sig, dated date, as seen at now; window is the skew
// window the caller accepts dates in. It fails with ErrReplay if sig was
// already recorded and with ErrTooOldForReplayCache if date is at or
// before the floor.
func (c *ReplayCache) Remember(sig []byte, date, now time.Time, window time.Duration) error {
	key := sha256.Sum256(sig)
	d := date.Unix()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now, window)
	if err := c.checkFloor(d); err != nil {
		return err
	}
	if _, ok := c.seen[key]; ok {
		return fmt.Errorf("%w: this signature, dated %s, was already accepted", ErrReplay, FormatDate(date))
	}
	for len(c.seen) >= c.capacity {
		c.evictOldest()
	}
	if err := c.checkFloor(d); err != nil {
		return err
	}
	c.add(key, d)
	return nil
}

// checkFloor refuses dates at or before the floor, with a
// *DateFloorError whose Earliest is the second after the floor.
func (c *ReplayCache) checkFloor(d int64) error {
	if c.hasFloor && d <= c.floor {
		return &DateFloorError{
			Reason: fmt.Errorf("%w: dated %s, the cache only covers signatures dated after %s (it was full, or the clock stepped back)",
				ErrTooOldForReplayCache, FormatDate(time.Unix(d, 0)), FormatDate(time.Unix(c.floor, 0))),
			Earliest: time.Unix(c.floor+1, 0),
		}
	}
	return nil
}

// expire forgets the dates that have left the window at now and raises the
// floor to the last second outside it.
func (c *ReplayCache) expire(now time.Time, window time.Duration) {
	cut := now.Add(-window) // dates before cut are outside the window
	last := cut.Unix()
	if !time.Unix(last, 0).Before(cut) {
		last--
	}
	c.raiseFloor(last)
	for len(c.dates) > 0 && c.dates[0] <= c.floor {
		c.dropDate(heap.Pop(&c.dates).(int64))
	}
}

// evictOldest forgets every signature of the oldest date and raises the
// floor to it.
func (c *ReplayCache) evictOldest() {
	d := heap.Pop(&c.dates).(int64)
	c.dropDate(d)
	c.raiseFloor(d)
}

func (c *ReplayCache) raiseFloor(d int64) {
	if !c.hasFloor || d > c.floor {
		c.floor, c.hasFloor = d, true
	}
}

// dropDate forgets the signatures of date d (already popped from dates).
func (c *ReplayCache) dropDate(d int64) {
	for _, k := range c.byDate[d] {
		delete(c.seen, k)
	}
	delete(c.byDate, d)
}

func (c *ReplayCache) add(key [sha256.Size]byte, d int64) {
	c.seen[key] = d
	if _, ok := c.byDate[d]; !ok {
		heap.Push(&c.dates, d)
	}
	c.byDate[d] = append(c.byDate[d], key)
}

// dateHeap is a min-heap of unix seconds.
type dateHeap []int64

func (h dateHeap) Len() int           { return len(h) }
func (h dateHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h dateHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dateHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *dateHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
