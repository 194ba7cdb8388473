package inproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/cli"
	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
)

// syncBuffer is a buffer the CLI writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestEventsFollowAcrossCoordinatorRestart: fabric events --follow goes on
// across a restart of the coordinator: it reconnects from the last
// revision it printed, prints the changes made after the restart, and
// prints no event twice.
func TestEventsFollowAcrossCoordinatorRestart(t *testing.T) {
	ctx := context.Background()
	c, peers := newCluster(t, 2)
	coordinator := peers[0]
	cliOK(t, c, "activate", "--coordinator", coordinator.Endpoint.String(), "--nodes", peers[1].Endpoint.String(),
		"--bootstrap-key-file", c.KeyFile, "--vpn-cidr", "203.0.113.0/24", "--admin-dir", c.AdminDir())
	cliOK(t, c, "watch", "--n", "2", "--timeout", "30s", "--admin-dir", c.AdminDir())

	var out, errs syncBuffer
	fctx, stop := context.WithCancel(ctx)
	code := make(chan int, 1)
	go func() {
		code <- cli.Run(fctx, []string{"events", "--follow", "-o", "json", "--timeout", "1m", "--admin-dir", c.AdminDir()}, &out, &errs)
	}()
	has := func(kind, detail string) func() bool {
		return func() bool {
			return strings.Contains(out.String(), fmt.Sprintf(`"kind":%q`, kind)) && strings.Contains(out.String(), detail)
		}
	}
	waitFor(t, "the follower to print the past", has("activated", `"node":"p2"`))

	if err := coordinator.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cliOK(t, c, "watch", "--n", "2", "--timeout", "30s", "--admin-dir", c.AdminDir())
	cliOK(t, c, "users", "add", "alice", "--key", sshuserstest.Key(1, "alice@laptop"), "--admin-dir", c.AdminDir())
	waitFor(t, "the follower to print the change made after the restart", has("users", "alice"))
	stop()
	if got := <-code; got != 0 {
		t.Errorf("fabric events --follow exited %d when interrupted, want 0; stderr:\n%s", got, errs.String())
	}
	if !strings.Contains(errs.String(), "the events stream broke") || !strings.Contains(errs.String(), "reconnecting from revision") {
		t.Errorf("stderr does not say the stream broke and was reopened:\n%s", errs.String())
	}
	seen := map[string]bool{}
	var last uint64
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e clusterstatus.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("fabric events printed %q: %v", line, err)
		}
		if e.Kind == "applied" {
			continue
		}
		key := fmt.Sprintf("%d %s %s", e.Revision, e.Kind, e.VPNIP)
		if seen[key] || e.Revision < last {
			t.Errorf("event %s printed twice or out of order:\n%s", key, out.String())
		}
		seen[key], last = true, e.Revision
	}
}
