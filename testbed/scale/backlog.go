package scale

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// backlogPath is the host's bound on the packets a CPU queues for the
// network stack, loopback's included (net.core.netdev_max_backlog; one
// value for every network namespace).
const backlogPath = "/proc/sys/net/core/netdev_max_backlog"

// raiseBacklog raises the host's backlog to at least want until restore
// is called. The simulator's nodes and the coordinator share one host, so
// all their packets cross one loopback backlog, which real nodes, each on
// its own machine, do not: the kernel's keepalive timers of thousands of
// connections that went quiet together (every node answered one join)
// fire in one softirq, and their probes, queued at once past the default
// 1,000, were dropped, so the user timeouts gave up watches that were
// alive. It reports the values it changed, if any.
func raiseBacklog(want int) (restore func() error, note string, err error) {
	b, err := os.ReadFile(backlogPath)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", backlogPath, err)
	}
	was, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %q: %w", backlogPath, b, err)
	}
	if was >= want {
		return func() error { return nil }, "", nil
	}
	if err := writeBacklog(want); err != nil {
		return nil, "", err
	}
	return func() error { return writeBacklog(was) },
		fmt.Sprintf("net.core.netdev_max_backlog raised from %d to %d for the run (one host's loopback carries every node's packets); restored after", was, want), nil
}

func writeBacklog(v int) error {
	if err := os.WriteFile(backlogPath, []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
		return fmt.Errorf("setting %s to %d: %w", backlogPath, v, err)
	}
	return nil
}
