package cli

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/spf13/cobra"
)

func newWatchCmd() *cobra.Command {
	var (
		adminDir string
		n        int
		timeout  time.Duration
		services []string
	)
	cmd := &cobra.Command{
		Use:   "watch --n N [--timeout D]",
		Short: "Wait until N peers are active, online and have applied the latest revision",
		Long: `watch polls the coordinator until at least N peers (coordinator and nodes) are
active and registered, every active peer has applied the cluster's current
revision (its WireGuard peers and its service view) and is online (its
watch of the coordinator is open and it reported within the last 25 s),
and, with --services, every active peer serves those services. It exits 0 then, or 1 at --timeout
saying which peers are missing or behind.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 {
				return usagef("--n must be at least 1")
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			admin, err := openAdminDir(adminDir)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := watch(ctx, admin, want{n: n, services: services})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d peers active at revision %d\n", countActive(st), st.Revision)
			return nil
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	cmd.Flags().IntVar(&n, "n", 0, "number of peers (coordinator included) to wait for (required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	cmd.Flags().StringSliceVar(&services, "services", nil, "services every active peer must serve (e.g. pastiche)")
	return cmd
}

// want is what watch waits for.
type want struct {
	n        int
	services []string
}

// watch polls until notConverged(st, w) is empty or ctx ends.
func watch(ctx context.Context, admin *adminDir, w want) (clusterstatus.Status, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last clusterstatus.Status
	var lastErr error
	for {
		st, err := fetchStatus(ctx, admin)
		if err == nil {
			last, lastErr = st, nil
			if missing := notConverged(st, w); missing == "" {
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
				msg += ": " + notConverged(last, w)
			}
			return last, &exitError{code: 1, msg: msg}
		}
	}
}

func countActive(st clusterstatus.Status) int {
	active := 0
	for _, p := range st.Peers {
		if p.State == "active" {
			active++
		}
	}
	return active
}

// notConverged says what keeps st from w ("" if nothing).
func notConverged(st clusterstatus.Status, w want) string {
	var behind, inactive, offline, unregistered, missing []string
	for _, p := range st.Peers {
		switch {
		case p.State != "active":
			inactive = append(inactive, fmt.Sprintf("%s %s (%s)", p.State, name(p), p.LastError))
		case !p.Online:
			offline = append(offline, fmt.Sprintf("%s (last seen %s)", name(p), cmp.Or(p.LastSeen, "never")))
		case !p.Registered:
			u := name(p)
			if p.RegistrationError != "" {
				u += " (" + p.RegistrationError + ")"
			}
			unregistered = append(unregistered, u)
		case p.AppliedRevision != st.Revision:
			behind = append(behind, fmt.Sprintf("%s at %d", name(p), p.AppliedRevision))
		}
		if p.State == "active" {
			for _, svc := range w.services {
				if !serves(p, svc) {
					missing = append(missing, svc+"@"+name(p))
				}
			}
		}
	}
	active := countActive(st)
	if active >= w.n && len(behind)+len(offline)+len(unregistered)+len(missing) == 0 {
		return ""
	}
	msg := fmt.Sprintf("%d of %d peers active, revision %d", active, w.n, st.Revision)
	for _, part := range []struct {
		what  string
		names []string
	}{{"offline", offline}, {"behind", behind}, {"not registered", unregistered}, {"services missing", missing}, {"not active", inactive}} {
		if len(part.names) > 0 {
			msg += "; " + part.what + ": " + strings.Join(part.names, ", ")
		}
	}
	return msg
}

func serves(p clusterstatus.Peer, service string) bool {
	for _, e := range p.Endpoints {
		if e.Service == service {
			return true
		}
	}
	return false
}

func name(p clusterstatus.Peer) string {
	if p.Name != "" {
		return p.Name
	}
	return p.PublicEndpoint
}
