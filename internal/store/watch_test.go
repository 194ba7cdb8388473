package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestWatchBehindHeldBatch: keys the watch took from its queue but could
// not send yet count against the limit. A reader that reads nothing ends
// the watch with ErrWatchBehind once more than limit keys wait, however
// the sender's batches fell (TestMemConformance/WatchBehind saw one that
// took almost every key at once and then blocked, so that the queue stayed
// under the limit and the watch never ended).
func TestWatchBehindHeldBatch(t *testing.T) {
	const limit = 20
	w := NewWatch(context.Background(), nil, limit)
	keys := func(n int) []KV {
		kvs := make([]KV, n)
		for i := range kvs {
			kvs[i] = KV{Key: fmt.Sprintf("k%d", i), Value: []byte("x")}
		}
		return kvs
	}
	// Fill C's buffer, so that the next batch blocks in the sender.
	if !w.Push(keys(cap(w.c))...) {
		t.Fatal("Push into an empty watch failed")
	}
	waitFor(t, func() bool { return len(w.c) == cap(w.c) })
	// A batch under the limit, which the sender takes whole and holds.
	if !w.Push(keys(limit - 2)...) {
		t.Fatal("Push under the limit failed")
	}
	waitFor(t, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return len(w.queue) == 0 })
	// limit-2 keys wait in the sender's batch: 5 more are over the limit.
	if w.Push(keys(5)...) {
		t.Fatal("Push over the limit, counting the held batch, succeeded")
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the watch still runs")
	}
	if err := w.Err(); !errors.Is(err, ErrWatchBehind) {
		t.Errorf("Err() = %v, want ErrWatchBehind", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
