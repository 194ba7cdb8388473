package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// eventApplied is the kind of a peer's report of the revision it applied:
// streamed live only, not in the change log.
const eventApplied = "applied"

func newEventsCmd() *cobra.Command {
	var (
		adminDir, output string
		follow           bool
		since            uint64
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "events [--follow] [--since REV] [-o table|json]",
		Short: "Show the cluster's change log as events, and with --follow every new one",
		Long: `events prints the cluster's changes since revision --since (0: from the oldest
the coordinator's change log still holds), one line each: the cluster
created, a node activating, activated, failed, registered or not, its
services up or down, its WireGuard endpoint changed, a
node removed, online or offline, the SSH users changed. With --follow it
goes on with every new change as it is committed, and with each revision a
peer reports it applied (kind applied, not in the log: these are only
streamed live), until interrupted.

Each line is REVISION TIME KIND NODE VPN-IP DETAIL; -o json prints one JSON
object per line instead. The revision makes it resumable: --since the last
revision printed goes on from there.

With --follow, a stream that breaks (the coordinator restarted or went
away, the network failed) is opened again from the last revision printed,
on the first coordinator of the admin bundle that answers, without
printing an event twice; the CLI gives up when none has answered for
--timeout. Without --follow, --timeout bounds the whole command.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			admin, err := openAdminDir(adminDir)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !follow {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			p := newEventPrinter(cmd.OutOrStdout(), output)
			r := &eventReader{
				dial: func() (eventStreamer, error) {
					c, err := admin.dialWith(pubapi.Keepalive())
					if err != nil {
						return nil, err
					}
					return c, nil
				},
				print:  p.print,
				warn:   cmd.ErrOrStderr(),
				follow: follow, since: since, giveUpAfter: timeout,
			}
			err = r.run(ctx)
			if err == nil && ctx.Err() != nil && !follow {
				return &exitError{code: 1, msg: fmt.Sprintf("timed out after %s reading the events (--timeout)", timeout)}
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().Uint64Var(&since, "since", 0, "print the events after this revision (0: from the oldest the log holds)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json (one object per line)")
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "without --follow: give up after this long; with --follow: give up when no coordinator answered for this long")
	return cmd
}

// eventStreamer opens the events stream (a *pubapi.Client).
type eventStreamer interface {
	Events(ctx context.Context, req *pubapipb.EventsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pubapipb.Event], error)
	Close() error
}

// errStreamEnded: the coordinator ended a followed stream (it is shutting
// down); the follower opens it again.
var errStreamEnded = status.Error(codes.Unavailable, "the coordinator ended the events stream")

// eventReader reads the events stream, and with follow opens it again
// where it broke.
type eventReader struct {
	dial   func() (eventStreamer, error)
	print  func(*pubapipb.Event) error
	warn   io.Writer
	follow bool
	since  uint64
	// giveUpAfter bounds how long a follower keeps trying to reconnect.
	giveUpAfter time.Duration

	// done is the last revision whose events were all printed; cur is
	// the revision of the last event printed, and curPrinted how many of
	// its events (an entry touching several peers has one each).
	done, cur  uint64
	curPrinted int
}

// run reads until the stream ends (without follow) or ctx ends.
func (r *eventReader) run(ctx context.Context) error {
	r.done = r.since
	b := retryBackoff{next: 500 * time.Millisecond, max: 5 * time.Second}
	var brokeAt time.Time
	for {
		started := time.Now()
		progressed, err := r.attempt(ctx)
		switch {
		case err == nil && !r.follow:
			return nil
		case err == nil:
			err = errStreamEnded
		}
		switch {
		case ctx.Err() != nil:
			return nil // interrupted, or (without follow) the caller's deadline
		case !r.follow || !resumable(err):
			return eventsError(err, r.done)
		}
		if progressed || time.Since(started) > b.max {
			brokeAt, b.next = time.Time{}, 500*time.Millisecond
		}
		if brokeAt.IsZero() {
			brokeAt = time.Now()
			fmt.Fprintf(r.warn, "fabric: the events stream broke (%s); reconnecting from revision %d\n", sentence(err), r.done)
		} else if time.Since(brokeAt) > r.giveUpAfter {
			return &exitError{code: 1, msg: fmt.Sprintf("no coordinator answered for %s (--timeout): %s; resume with --since %d", r.giveUpAfter, sentence(err), r.done)}
		}
		if !b.wait(ctx) {
			return nil
		}
	}
}

// attempt opens the stream from r.done and prints what it brings, without
// the events of r.cur it printed already; progressed says whether it
// printed any.
func (r *eventReader) attempt(ctx context.Context) (progressed bool, err error) {
	c, err := r.dial()
	if err != nil {
		return false, err
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Events(ctx, &pubapipb.EventsRequest{Since: r.done, Follow: r.follow})
	if err != nil {
		return false, err
	}
	skip := 0 // events of r.cur to skip: printed before the break
	if r.cur > r.done {
		skip = r.curPrinted
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return progressed, nil
		}
		if err != nil {
			return progressed, err
		}
		if ev.GetKind() != eventApplied {
			if ev.GetRevision() == r.cur && skip > 0 {
				skip--
				continue
			}
			if ev.GetRevision() != r.cur {
				if r.cur > r.done {
					r.done = r.cur
				}
				r.cur, r.curPrinted, skip = ev.GetRevision(), 0, 0
			}
			r.curPrinted++
		}
		if err := r.print(ev); err != nil {
			return progressed, err
		}
		progressed = true
	}
}

// resumable reports whether a broken events stream may be opened again:
// the connection failed or broke, the coordinator was busy or restarting,
// or the follower fell behind the live events (the log still has them).
func resumable(err error) bool {
	// An error that is no gRPC status (no coordinator of the bundle
	// answered the dial) has code Unknown.
	switch status.Code(err) {
	case codes.Unavailable, codes.Unknown, codes.Aborted, codes.ResourceExhausted, codes.Canceled, codes.DeadlineExceeded, codes.Internal:
		return true
	}
	return false
}

// eventsError describes a failure to read the events.
func eventsError(err error, done uint64) error {
	if status.Code(err) == codes.OutOfRange {
		return fmt.Errorf("reading the events: %s; --since 0 starts from the oldest revision the log still holds", status.Convert(err).Message())
	}
	if _, ok := status.FromError(err); ok {
		return rpcError(fmt.Sprintf("reading the events after revision %d", done), err)
	}
	return err
}

// eventPrinter prints events as a table or as JSON lines.
type eventPrinter struct {
	out    io.Writer
	json   *json.Encoder
	header bool
}

func newEventPrinter(out io.Writer, format string) *eventPrinter {
	p := &eventPrinter{out: out}
	if format == "json" {
		p.json = json.NewEncoder(out)
	}
	return p
}

const eventRowFormat = "%-8s  %-24s  %-19s  %-12s  %-15s  %s"

func (p *eventPrinter) print(ev *pubapipb.Event) error {
	e := eventFromProto(ev)
	if p.json != nil {
		return p.json.Encode(e)
	}
	if !p.header {
		p.header = true
		if err := p.row("REVISION", "TIME", "KIND", "NODE", "VPN IP", "DETAIL"); err != nil {
			return err
		}
	}
	return p.row(fmt.Sprint(e.Revision), e.At, e.Kind, orDash(e.Node), orDash(e.VPNIP), e.Detail)
}

func (p *eventPrinter) row(cols ...any) error {
	_, err := fmt.Fprintln(p.out, strings.TrimRight(fmt.Sprintf(eventRowFormat, cols...), " "))
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func eventFromProto(ev *pubapipb.Event) clusterstatus.Event {
	return clusterstatus.Event{
		Revision: ev.GetRevision(), At: time.UnixMilli(ev.GetAt()).UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Kind: ev.GetKind(), Node: ev.GetNode(), VPNIP: ev.GetVpnIp(), Detail: ev.GetDetail(),
	}
}
