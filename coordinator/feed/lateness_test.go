package feed_test

import (
	"testing"
	"time"
)

// TestLateness: how late an answer is counts from the first change that
// concerns the node, not from changes that do not, and is zero for a node
// that is current or that nothing concerned.
func TestLateness(t *testing.T) {
	s := newScene(t, 100)
	s.join("n1", "sharks")
	s.join("n2", "jets")
	current := s.reg.Revision()
	if got := s.feed.Lateness(s.ips["n1"], current); got != 0 {
		t.Errorf("Lateness of a current node = %v, want 0", got)
	}
	// n2's registration failing concerns the coordinator (its reeve's
	// view) and n2, not n1 (another horde, no shared rule but the
	// coordinator's).
	_, err := s.reg.SetRegistration(s.ips["n2"], nil, "the reeve did not answer")
	s.must(err)
	if got := s.feed.Lateness(s.ips["n1"], current); got != 0 {
		t.Errorf("Lateness of n1 after a change that does not concern it = %v, want 0", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := s.feed.Lateness(s.ips["n2"], current); got < 50*time.Millisecond || got > time.Minute {
		t.Errorf("Lateness of n2 50 ms after its own change = %v", got)
	}
}
