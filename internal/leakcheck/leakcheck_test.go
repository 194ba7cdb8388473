package leakcheck

import (
	"strings"
	"testing"
	"time"
)

func parkedHere(started chan<- struct{}, stop <-chan struct{}) {
	close(started)
	<-stop
}

func TestLeaked(t *testing.T) {
	started, stop := make(chan struct{}), make(chan struct{})
	go parkedHere(started, stop)
	<-started
	got := Leaked(50*time.Millisecond, "leakcheck.parkedHere")
	if !strings.Contains(got, "leakcheck.parkedHere") {
		t.Errorf("Leaked() = %q, want the parked goroutine's stack", got)
	}
	close(stop)
	if got := Leaked(5*time.Second, "leakcheck.parkedHere"); got != "" {
		t.Errorf("Leaked() after the goroutine ended = %q, want none", got)
	}
	if got := Leaked(0, "no.such.mark"); got != "" {
		t.Errorf("Leaked() with no match = %q", got)
	}
}
