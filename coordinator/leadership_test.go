package coordinator

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeElector grants its leadership to one campaign at a time and lets the
// test take it away; its first campaign fails.
type fakeElector struct {
	mu        sync.Mutex
	campaigns int
	lose      context.CancelFunc
	resigned  int
	granted   chan struct{}
}

func (e *fakeElector) Campaign(ctx context.Context, name, value string) (context.Context, func(), error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.campaigns++
	if e.campaigns == 1 {
		return nil, nil, errors.New("etcd has no quorum")
	}
	lead, lose := context.WithCancel(ctx)
	e.lose = lose
	e.granted <- struct{}{}
	return lead, func() {
		lose()
		e.mu.Lock()
		e.resigned++
		e.mu.Unlock()
	}, nil
}

// TestLeadership: a failed campaign is retried; the leader leads until it
// loses the leadership, resigns and campaigns again; it stops with ctx.
func TestLeadership(t *testing.T) {
	e := &fakeElector{granted: make(chan struct{}, 1)}
	l := &Leadership{Elector: e, Name: "job", Value: "c1"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx)
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	<-e.granted
	waitFor("the leadership", l.Leading)
	e.mu.Lock()
	e.lose()
	e.mu.Unlock()
	<-e.granted // campaigned again
	waitFor("the leadership again", l.Leading)
	cancel()
	<-done
	if l.Leading() {
		t.Error("still leading after Run returned")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.campaigns != 3 || e.resigned != 2 {
		t.Errorf("%d campaigns, %d resignations; want 3 (one failed) and 2", e.campaigns, e.resigned)
	}
}
