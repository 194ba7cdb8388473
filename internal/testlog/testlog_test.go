package testlog

import (
	"log/slog"
	"testing"
)

func TestNew(t *testing.T) {
	log := New(t)
	if !log.Enabled(t.Context(), slog.LevelDebug) {
		t.Error("debug records are dropped")
	}
	log.Debug("a debug record", "key", "value")
}

func TestLogAfterTheTestEnded(t *testing.T) {
	var log *slog.Logger
	t.Run("inner", func(t *testing.T) { log = New(t) })
	// Without the drop, the testing package panics: "Log in goroutine
	// after inner has completed".
	log.Warn("logged after the end")
}
