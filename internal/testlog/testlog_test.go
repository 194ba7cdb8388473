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
