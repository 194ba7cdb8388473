package httpsig

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDateSourceUnique(t *testing.T) {
	s := NewDateSource(DateSourceConfig{MaxAhead: 2 * time.Second})
	now := testNow.Add(300 * time.Millisecond)
	type out struct {
		Date time.Time
		Wait time.Duration
	}
	next := func(target, digest string) out {
		d, w := s.Next(target, digest, now)
		return out{d, w}
	}
	got := []out{
		next("post /a", "d1"),
		next("post /a", "d1"),
		next("post /a", "d2"), // another body: the current second is free
		next("post /b", "d1"), // another target: likewise
		next("post /a", "d1"),
		next("post /a", "d1"),
	}
	want := []out{
		{testNow, 0},
		{testNow.Add(time.Second), 0},
		{testNow, 0},
		{testNow, 0},
		{testNow.Add(2 * time.Second), 0},
		{testNow.Add(3 * time.Second), 700 * time.Millisecond}, // 2.7s ahead, 0.7s over MaxAhead
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Next (-want +got):\n%s", diff)
	}
	// Later, the clock has passed the dates handed out.
	now = testNow.Add(10 * time.Second)
	if d, w := s.Next("post /a", "d1", now); !d.Equal(now) || w != 0 {
		t.Errorf("Next later = %v, %v; want %v, 0", d, w, now)
	}
}

func TestDateSourceBounded(t *testing.T) {
	const capacity = 8
	s := NewDateSource(DateSourceConfig{Capacity: capacity})
	handed := make(map[string]time.Time)
	check := func(key string, now time.Time) {
		t.Helper()
		d, _ := s.Next("post /a", key, now)
		if last, ok := handed[key]; ok && !d.After(last) {
			t.Fatalf("Next(%s) = %v, not after %v", key, d, last)
		}
		handed[key] = d
		if s.Len() > capacity {
			t.Fatalf("Len = %d, over capacity %d", s.Len(), capacity)
		}
	}
	// Many distinct pairs in one second, twice: the source forgets, yet
	// never repeats a date for a pair.
	for range 2 {
		for i := range 3 * capacity {
			check(string(rune('A'+i)), testNow)
		}
	}
	// In later seconds, past pairs are simply dropped.
	for i := range 3 * capacity {
		check(string(rune('a'+i)), testNow.Add(time.Duration(10+i)*time.Second))
	}
}

// TestDateSourceForgettingKeepsTheClock: when the source forgets pairs of
// which some ran ahead of the clock, new pairs are still dated now. (With
// one watermark for all pairs, every new pair was dated after the latest
// date forgotten, and each forgetting pushed them a second further.)
func TestDateSourceForgettingKeepsTheClock(t *testing.T) {
	const capacity = 64
	s := NewDateSource(DateSourceConfig{Capacity: capacity})
	now := testNow
	// More identical calls than fit in a second, for a few pairs: they run
	// ahead of the clock.
	for i := range 8 {
		for range 30 {
			s.Next("post /a", fmt.Sprintf("burst%d", i), now)
		}
	}
	late := 0
	for i := range 50 * capacity {
		now = now.Add(10 * time.Millisecond)
		if d, _ := s.Next("post /a", fmt.Sprintf("new%d", i), now); d.Unix() > now.Unix()+1 {
			late++
		}
	}
	// A new pair may share a bucket with a pair that ran ahead: a few.
	if late > capacity/8 {
		t.Errorf("%d of %d new pairs dated over a second ahead of the clock", late, 50*capacity)
	}
}

func TestDateSourceConcurrent(t *testing.T) {
	s := NewDateSource(DateSourceConfig{MaxAhead: time.Hour})
	const goroutines, each = 8, 50
	dates := make([][]time.Time, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				d, _ := s.Next("post /a", "same", testNow)
				dates[g] = append(dates[g], d)
			}
		}()
	}
	wg.Wait()
	seen := make(map[time.Time]bool)
	for _, ds := range dates {
		for _, d := range ds {
			if seen[d] {
				t.Fatalf("date %v handed out twice", d)
			}
			seen[d] = true
		}
	}
}
