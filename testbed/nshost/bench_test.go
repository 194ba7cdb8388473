package nshost

import (
	"log/slog"
	"testing"
)

// BenchmarkLab20 measures making a lab of 20 hosts and tearing it down.
func BenchmarkLab20(b *testing.B) {
	requireRoot(b)
	for b.Loop() {
		l, err := New(b.Context(), Config{WorkDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.AddHosts(b.Context(), 20, nil); err != nil {
			l.Close()
			b.Fatal(err)
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
