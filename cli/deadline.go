package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Every command that calls a peer has a deadline: --timeout, with a default
// per command (TestEveryCallHasADeadline keeps it so).
const (
	// defaultCallTimeout bounds a command that makes one call.
	defaultCallTimeout = 30 * time.Second
	// An activation or add-nodes without --timeout may take
	// activationBaseTimeout plus activationBatchTimeout per
	// activationBatch nodes: a coordinator activates at least 32 nodes at a
	// time (128 now; older ones 32) and gives each at most 30 s (retries
	// included), so every batch of 32 is given twice that. The 1024 nodes one request may name: 2 minutes
	// + 32 minutes, a bound that only dead nodes come near; healthy ones
	// take about a second per batch.
	activationBaseTimeout  = 2 * time.Minute
	activationBatchTimeout = time.Minute
	activationBatch        = 32
	// streamIdleTimeout: an activation stream that brings nothing for this
	// long is taken as broken, and the command asks again (the
	// coordinator reports every node within 30 s).
	streamIdleTimeout = 90 * time.Second
)

// addTimeoutFlag gives cmd its --timeout flag with the default def (0 when
// the command computes it).
func addTimeoutFlag(cmd *cobra.Command, d *time.Duration, def time.Duration, usage string) {
	cmd.Flags().DurationVar(d, "timeout", def, usage)
}

// withTimeout is the command's context bounded by d, which must be
// positive.
func withTimeout(cmd *cobra.Command, d time.Duration) (context.Context, context.CancelFunc, error) {
	if d <= 0 {
		return nil, nil, usagef("--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), d)
	return ctx, cancel, nil
}

// activationTimeout is the default deadline of activating n nodes.
func activationTimeout(n int) time.Duration {
	batches := (n + activationBatch - 1) / activationBatch
	return activationBaseTimeout + time.Duration(batches)*activationBatchTimeout
}

// shellQuote quotes s for a POSIX shell if it needs it, so that a printed
// command can be pasted as it is.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// commandLine renders a fabric command with its flags, quoted for a shell.
func commandLine(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return "fabric " + strings.Join(q, " ")
}
