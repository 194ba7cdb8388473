package feed_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
)

// TestWakesWhomAChangeConcerns: for random changes, every watcher waiting
// in Next whose answer the change alters is woken, and some whose answer
// it does not alter are passed over.
func TestWakesWhomAChangeConcerns(t *testing.T) {
	w := newWorld(t, 11, store.NewMem(), 10000)
	f, err := feed.New(w.reg, w.rules, feed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		u   update.Update
		err error
	}
	woken, passedOver := 0, 0
	for i := range 300 {
		rev := f.Revision()
		_, peers := w.reg.Peers()
		waits := map[netip.Addr]chan result{}
		cancels := map[netip.Addr]context.CancelFunc{}
		for _, p := range peers {
			if p.Role == records.RoleAdmin || p.State != records.StateActive {
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			ch := make(chan result, 1)
			go func() {
				u, err := f.Next(ctx, p.VPNIP, rev, 0)
				ch <- result{u, err}
			}()
			waits[p.VPNIP], cancels[p.VPNIP] = ch, cancel
		}
		for deadline := time.Now().Add(30 * time.Second); f.Waiting() < len(waits); {
			if time.Now().After(deadline) {
				t.Fatalf("step %d: %d of %d watchers waiting", i, f.Waiting(), len(waits))
			}
			time.Sleep(time.Millisecond)
		}
		what := w.step()
		for ip, ch := range waits {
			u, err := f.Answer(ip, rev)
			if err != nil {
				t.Fatalf("step %d (%s): %v", i, what, err)
			}
			if u.Kind == update.Unchanged {
				// It may have been woken between two entries of a
				// step (a reservation, then its failure).
				cancels[ip]()
				if r := <-ch; r.err != nil {
					passedOver++
				}
				continue
			}
			select {
			case r := <-ch:
				if r.err != nil {
					t.Fatalf("step %d (%s): Next of %s: %v", i, what, ip, r.err)
				}
				woken++
			case <-time.After(30 * time.Second):
				t.Fatalf("step %d (%s): %s has a %v answer but was not woken", i, what, ip, u.Kind)
			}
			cancels[ip]()
		}
	}
	if woken == 0 || passedOver == 0 {
		t.Errorf("%d watchers woken, %d passed over: the steps did not exercise both", woken, passedOver)
	}
}
