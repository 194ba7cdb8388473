// Package testlog gives tests a logger that writes to the test's output.
package testlog

import (
	"log/slog"
	"testing"
)

// New is a logger, down to debug level, whose records go to tb's output
// (shown for failed tests and with -v).
func New(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
