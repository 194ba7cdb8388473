package events

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/google/go-cmp/cmp"
)

// fakeLog is a change log holding the entries from first to the last.
type fakeLog struct {
	mu      sync.Mutex
	entries []registry.Entry // revisions first, first+1, ...
	first   uint64
}

func (l *fakeLog) LogFirst() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

func (l *fakeLog) ReadLog(since uint64, fn func(registry.Entry) error) (uint64, error) {
	l.mu.Lock()
	entries, first := append([]registry.Entry(nil), l.entries...), l.first
	l.mu.Unlock()
	last := first + uint64(len(entries)) - 1
	if since+1 < first && since < last {
		return 0, fmt.Errorf("%w: the log starts at revision %d", registry.ErrCompacted, first)
	}
	for _, e := range entries {
		if e.Revision > since {
			if err := fn(e); err != nil {
				return 0, err
			}
		}
	}
	return last, nil
}

func entry(rev uint64, kind registry.EntryKind, node string) registry.Entry {
	return registry.Entry{Revision: rev, At: time.UnixMilli(int64(rev)), Kind: kind,
		Peers: []registry.Touched{{VPNIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(rev)}), Name: node}}}
}

// brief is what the tests compare of an event.
func brief(e Event) string { return fmt.Sprintf("%d %s %s", e.Revision, e.Kind, e.Node) }

func TestStreamPast(t *testing.T) {
	log := &fakeLog{first: 4, entries: []registry.Entry{
		entry(4, registry.KindActivated, "h2"), entry(5, registry.KindRegistered, "h2"),
		entry(6, registry.KindRemoved, "h2"), entry(7, registry.KindUsers, ""),
	}}
	tests := []struct {
		name    string
		since   uint64
		want    []string
		wantErr error
	}{
		{"since 0: from the oldest held", 0, []string{"4 activated h2", "5 registered h2", "6 removed h2", "7 users "}, nil},
		{"since the revision before the oldest", 3, []string{"4 activated h2", "5 registered h2", "6 removed h2", "7 users "}, nil},
		{"since a revision held", 5, []string{"6 removed h2", "7 users "}, nil},
		{"since the last", 7, nil, nil},
		{"since a compacted revision", 2, nil, registry.ErrCompacted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			err := NewHub().Stream(context.Background(), log, tt.since, false, func(e Event) error {
				got = append(got, brief(e))
				return nil
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Stream = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStreamFollow: the past, then the live events in order, without the
// ones the past already held, with the applied reports.
func TestStreamFollow(t *testing.T) {
	log := &fakeLog{first: 1, entries: []registry.Entry{entry(1, registry.KindInit, "h1"), entry(2, registry.KindActivated, "h2")}}
	hub := NewHub()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- hub.Stream(ctx, log, 1, true, func(e Event) error {
			got <- brief(e)
			return nil
		})
	}()
	want := []string{"2 activated h2"}
	recv := func() string {
		select {
		case s := <-got:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
			return ""
		}
	}
	if s := recv(); s != want[0] {
		t.Fatalf("first event %q, want %q", s, want[0])
	}
	// Published live: revision 2 again (already read), then new ones.
	hub.Entries([]registry.Entry{entry(2, registry.KindActivated, "h2"), entry(3, registry.KindOffline, "h2")})
	hub.Publish(Event{Revision: 3, Kind: Applied, Node: "h3"})
	hub.Entries([]registry.Entry{entry(4, registry.KindRemoved, "h2")})
	for _, w := range []string{"3 offline h2", "3 applied h3", "4 removed h2"} {
		if s := recv(); s != w {
			t.Errorf("event %q, want %q", s, w)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Stream after its context ended = %v, want nil", err)
	}
}

// TestStreamBehind: a follower whose buffer fills is cut off, and Stream
// fails with ErrBehind, saying the last revision it read.
func TestStreamBehind(t *testing.T) {
	log := &fakeLog{first: 1, entries: []registry.Entry{entry(1, registry.KindInit, "h1")}}
	hub := NewHub()
	ch, stop := hub.Follow(2)
	defer stop()
	hub.Publish(Event{Revision: 2}, Event{Revision: 3}, Event{Revision: 4})
	n := 0
	for range ch {
		n++
	}
	if n != 2 {
		t.Errorf("a follower with a buffer of 2 got %d events before it was cut off", n)
	}
	// Stream's own follower: block fn until the hub overflows it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- hub.Stream(ctx, log, 0, true, func(e Event) error {
			if e.Revision == 1 {
				<-release
			}
			return nil
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hub.mu.Lock()
		subs := len(hub.subs)
		hub.mu.Unlock()
		if subs > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Stream never followed the hub")
		}
		time.Sleep(time.Millisecond)
	}
	for rev := uint64(2); rev < 2+1<<14+1; rev++ {
		hub.Publish(Event{Revision: rev, Kind: Activated})
	}
	close(release)
	err := <-done
	// It read what its buffer held (revisions 2 to 1+2^14) before it
	// saw it was cut off.
	if want := fmt.Sprintf("fell behind the live events after revision %d", 1+1<<14); !errors.Is(err, ErrBehind) || err.Error() != want {
		t.Errorf("Stream of a slow follower = %v, want %q", err, want)
	}
}
