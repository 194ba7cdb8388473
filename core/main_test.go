package core

import (
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/leakcheck"
)

// TestMain fails the run if a test left a goroutine of core (or of the
// fakes) running: every test must end its peers' loops.
func TestMain(m *testing.M) {
	leakcheck.Main(m, 2*time.Second, "fabric/core.")
}
