package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fabricmesh/fabric/internal/atomicfile"
)

// leavingMarker, in the state directory, says that the peer was removed
// from its cluster and its state is being wiped: a crash during the wipe
// is finished at the next start instead of leaving half a peer.
const leavingMarker = "leaving"

// stateEntries are what fabricd keeps in its state directory.
var stateEntries = []string{"fabric.db", "identity", "pastiche", "reeve.sock"}

// wipeState deletes the peer's state so that it starts over with a new
// identity.
func wipeState(dir string) error {
	err := atomicfile.WriteFile(filepath.Join(dir, leavingMarker), []byte("removed from its cluster; the state is being wiped\n"), 0o600)
	if err != nil {
		return fmt.Errorf("marking the state for wiping: %w", err)
	}
	return finishWipe(dir)
}

// finishWipe completes a wipe that was started (the marker exists).
func finishWipe(dir string) error {
	marker := filepath.Join(dir, leavingMarker)
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, name := range stateEntries {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("wiping the state after removal: %w", err)
		}
	}
	if err := os.Remove(marker); err != nil {
		return fmt.Errorf("wiping the state after removal: %w", err)
	}
	return nil
}
