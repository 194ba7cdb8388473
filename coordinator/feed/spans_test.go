package feed_test

import (
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/google/go-cmp/cmp"
)

// TestSpansDropped: the spans shared by the watchers of a round are
// forgotten SpanLife after they were started, even when no change comes
// to replace them; answers after that are computed again, the same.
func TestSpansDropped(t *testing.T) {
	w := newWorld(t, 3, store.NewMem(), 10000)
	for range 5 {
		w.join()
	}
	f, err := feed.New(w.reg, w.rules, feed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, peers := w.reg.Peers()
	var node records.Peer
	for _, p := range peers {
		if p.Role == records.RoleNode && p.State == records.StateActive {
			node = p
		}
	}
	rev := f.Revision()
	for range 20 { // joins, some of which fail
		w.join()
	}
	before, err := f.Answer(node.VPNIP, rev)
	if err != nil {
		t.Fatal(err)
	}
	if before.Kind != update.Delta {
		t.Fatalf("answer of %s from revision %d is of kind %v, want a delta", node.Name, rev, before.Kind)
	}
	if f.Spans() == 0 {
		t.Fatalf("no span kept after answering from revision %d", rev)
	}
	deadline := time.Now().Add(feed.SpanLife + 5*time.Second)
	for f.Spans() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d spans still kept %v after they were started", f.Spans(), feed.SpanLife+5*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, err := f.Answer(node.VPNIP, rev)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after, cmpView); diff != "" {
		t.Errorf("answer after the spans were dropped (-before +after):\n%s", diff)
	}
}
