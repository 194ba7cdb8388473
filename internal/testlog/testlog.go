// Package testlog gives tests a logger that writes to the test's output.
package testlog

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// New is a logger, down to debug level, whose records go to tb's output
// (shown for failed tests and with -v). Records logged after the test has
// completed (a daemon's timer that fires after its test stopped it, say)
// are dropped: the testing package panics on output after the end.
func New(tb testing.TB) *slog.Logger { return NewLevel(tb, slog.LevelDebug) }

// NewLevel is New for records of level and above.
func NewLevel(tb testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{out: tb.Output()}
	tb.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu  sync.Mutex
	out io.Writer // nil once the test has completed
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out == nil {
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out = nil
}
