package httpsig

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const window = 5 * time.Minute

func sig(i int) []byte { return []byte(fmt.Sprintf("signature %d", i)) }

func TestReplayCacheRemembers(t *testing.T) {
	c := NewReplayCache(10)
	if err := c.Remember(sig(1), testNow, testNow, window); err != nil {
		t.Fatalf("Remember: %v", err)
	}
	err := c.Remember(sig(1), testNow, testNow.Add(time.Minute), window)
	if !errors.Is(err, ErrReplay) {
		t.Fatalf("Remember again = %v, want ErrReplay", err)
	}
	if err := c.Remember(sig(2), testNow, testNow, window); err != nil {
		t.Errorf("Remember(other signature): %v", err)
	}
}

func TestReplayCacheForgetsOutsideWindow(t *testing.T) {
	c := NewReplayCache(10)
	for i := range 3 {
		if err := c.Remember(sig(i), testNow.Add(time.Duration(i)*time.Second), testNow, window); err != nil {
			t.Fatalf("Remember(%d): %v", i, err)
		}
	}
	// At testNow+window+1s, the date testNow has left the window.
	if err := c.Remember(sig(9), testNow.Add(window), testNow.Add(window+time.Second), window); err != nil {
		t.Fatalf("Remember: %v", err)
	}
	if got, want := c.Len(), 3; got != want {
		t.Errorf("Len = %d, want %d (the oldest date expired)", got, want)
	}
	floor, ok := c.Floor()
	if !ok || !floor.Equal(testNow) {
		t.Errorf("Floor = %v, %v; want %v (the last second outside the window)", floor, ok, testNow)
	}
	// If the clock steps back, the forgotten signature stays refused.
	err := c.Remember(sig(0), testNow, testNow, window)
	if !errors.Is(err, ErrTooOldForReplayCache) {
		t.Errorf("Remember(forgotten, clock stepped back) = %v, want ErrTooOldForReplayCache", err)
	}
}

func TestReplayCacheBoundsAndFloor(t *testing.T) {
	const capacity = 4
	c := NewReplayCache(capacity)
	// Two signatures per second, at testNow, +1s, +2s.
	dates := []time.Duration{0, 0, time.Second, time.Second, 2 * time.Second}
	var errs []string
	for i, d := range dates {
		if err := c.Remember(sig(i), testNow.Add(d), testNow, window); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		t.Fatalf("Remember: %v", errs)
	}
	// The fifth signature evicted both of testNow's.
	if got, want := c.Len(), 3; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	floor, _ := c.Floor()
	if !floor.Equal(testNow) {
		t.Errorf("Floor = %v, want %v", floor, testNow)
	}

	tests := []struct {
		name    string
		sig     []byte
		date    time.Time
		wantErr error
	}{
		{"evicted signature is not let through", sig(0), testNow, ErrTooOldForReplayCache},
		{"new signature at the floor", sig(100), testNow, ErrTooOldForReplayCache},
		{"new signature before the floor", sig(101), testNow.Add(-time.Minute), ErrTooOldForReplayCache},
		{"remembered signature after the floor", sig(2), testNow.Add(time.Second), ErrReplay},
		{"new signature after the floor", sig(102), testNow.Add(3 * time.Second), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Remember(tt.sig, tt.date, testNow, window)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("Remember = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if got := c.Len(); got > capacity {
		t.Errorf("Len = %d, over capacity %d", got, capacity)
	}
}

func TestReplayCacheFullInOneSecond(t *testing.T) {
	// A burst over capacity inside one second: the cache forgets that
	// second and refuses the rest of it, rather than let anything through.
	c := NewReplayCache(2)
	var got []error
	for i := range 3 {
		got = append(got, c.Remember(sig(i), testNow, testNow, window))
	}
	want := []error{nil, nil, ErrTooOldForReplayCache}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b error) bool { return errors.Is(a, b) || errors.Is(b, a) })); diff != "" {
		t.Errorf("Remember results (-want +got):\n%s", diff)
	}
	for i := range 2 {
		if err := c.Remember(sig(i), testNow, testNow, window); !errors.Is(err, ErrTooOldForReplayCache) {
			t.Errorf("replay of %d = %v, want ErrTooOldForReplayCache", i, err)
		}
	}
	if err := c.Remember(sig(3), testNow.Add(time.Second), testNow, window); err != nil {
		t.Errorf("next second: %v", err)
	}
}

func TestReplayCacheMessage(t *testing.T) {
	c := NewReplayCache(1)
	_ = c.Remember(sig(0), testNow, testNow, window)
	_ = c.Remember(sig(1), testNow.Add(time.Second), testNow, window)
	err := c.Remember(sig(2), testNow, testNow, window)
	want := "signature too old for the replay cache: dated Mon, 04 May 2026 12:00:00 GMT, the cache only covers signatures dated after Mon, 04 May 2026 12:00:00 GMT (it was full, or the clock stepped back)"
	if err == nil || err.Error() != want {
		t.Errorf("Remember = %v\nwant %s", err, want)
	}
}

func TestReplayCacheConcurrent(t *testing.T) {
	const goroutines, each = 8, 200
	c := NewReplayCache(goroutines * each)
	var wg sync.WaitGroup
	accepted := make([]int, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every goroutine offers the same signatures: each must be
			// accepted exactly once overall.
			for i := range each {
				if c.Remember(sig(i), testNow, testNow, window) == nil {
					accepted[g]++
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range accepted {
		total += n
	}
	if total != each {
		t.Errorf("accepted %d signatures, want %d (each once)", total, each)
	}
}
