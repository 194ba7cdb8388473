package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newWatchCmd() *cobra.Command {
	var (
		adminDir string
		n        int
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch --n N [--timeout D]",
		Short: "Wait until N peers are active and have applied the latest revision",
		Long: `watch polls the coordinator until at least N peers (coordinator and nodes) are
active and every active peer has applied the cluster's current revision. It
exits 0 then, or 1 at --timeout saying which peers are missing or behind.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 {
				return usagef("--n must be at least 1")
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			admin, err := loadAdminDir(adminDir)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := watch(ctx, admin, n)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d peers active at revision %d\n", countActive(st), st.Revision)
			return nil
		},
	}
	cmd.Flags().StringVar(&adminDir, "admin-dir", defaultAdminDir, "admin bundle written by 'fabric activate'")
	cmd.Flags().IntVar(&n, "n", 0, "number of peers (coordinator included) to wait for (required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// watch polls until converged(st, n) or ctx ends.
func watch(ctx context.Context, admin *adminDir, n int) (Status, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last Status
	var lastErr error
	for {
		st, err := fetchStatus(ctx, admin)
		if err == nil {
			last, lastErr = st, nil
			if missing := notConverged(st, n); missing == "" {
				return st, nil
			}
		} else if ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			msg := "timed out"
			if lastErr != nil {
				msg += ": " + lastErr.Error()
			}
			if last.Revision > 0 {
				msg += ": " + notConverged(last, n)
			}
			return last, &exitError{code: 1, msg: msg}
		}
	}
}

func countActive(st Status) int {
	active := 0
	for _, p := range st.Peers {
		if p.State == "active" {
			active++
		}
	}
	return active
}

// notConverged says what keeps st from n converged peers ("" if nothing).
func notConverged(st Status, n int) string {
	var behind, inactive []string
	for _, p := range st.Peers {
		switch {
		case p.State != "active":
			inactive = append(inactive, fmt.Sprintf("%s %s (%s)", p.State, name(p), p.LastError))
		case p.AppliedRevision != st.Revision:
			behind = append(behind, fmt.Sprintf("%s at %d", name(p), p.AppliedRevision))
		}
	}
	active := countActive(st)
	if active >= n && len(behind) == 0 {
		return ""
	}
	msg := fmt.Sprintf("%d of %d peers active, revision %d", active, n, st.Revision)
	if len(behind) > 0 {
		msg += "; behind: " + strings.Join(behind, ", ")
	}
	if len(inactive) > 0 {
		msg += "; not active: " + strings.Join(inactive, ", ")
	}
	return msg
}

func name(p StatusPeer) string {
	if p.Name != "" {
		return p.Name
	}
	return p.PublicEndpoint
}
