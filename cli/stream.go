package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errNotSent marks an error of a call made before the request itself: the
// request did not reach the coordinator.
type errNotSent struct{ error }

func (e errNotSent) Unwrap() error { return e.error }

// sentence describes err for the operator (errNotSent unwrapped).
func sentence(err error) string {
	var ns errNotSent
	if errors.As(err, &ns) {
		err = ns.error
	}
	return describe(err)
}

var (
	errStreamIdle = fmt.Errorf("the coordinator sent nothing for %s", streamIdleTimeout)
	errNoResult   = errors.New("the coordinator ended the stream without a result")
)

// activationStream follows the stream of an activation or of add-nodes.
// When the stream breaks off before its result (the coordinator
// restarted, the network failed, nothing came for streamIdleTimeout) it
// asks again until ctx ends: both calls are idempotent, and the
// coordinator reports every node again. What it prints when it gives up
// is true whatever happened at the coordinator, and names the command
// that completes the work.
type activationStream struct {
	out   io.Writer
	admin *adminDir
	nodes []string
	// what names the work in errors; again is the command that repeats it.
	what, again string
	dial        func() (*pubapi.Client, error)
	// open sends the request; an errNotSent says it was not sent.
	open func(ctx context.Context, c *pubapi.Client) (grpc.ServerStreamingClient[pubapipb.ActivationEvent], error)
	// onStarted, set for an activation, takes the event that announces
	// the cluster, which comes first.
	onStarted func(stream grpc.ClientStream, started *pubapipb.ActivationStarted) error

	// mayHaveReached: a request was sent. mayBeCommitted: the coordinator
	// may have acted on one (an answer was lost, or it said so); set from
	// the start when the request repeats one of an earlier run.
	mayHaveReached, mayBeCommitted bool
	// started: an activation's cluster was announced, or add-nodes had an
	// event.
	started bool
	// outcomes holds each node's last outcome line.
	outcomes map[string]nodeOutcome
	// finished: the result arrived and was handled.
	finished bool
}

type nodeOutcome struct {
	line     string
	failed   bool
	retrying bool
}

// run follows the stream, asking again while the failure may pass.
func (s *activationStream) run(ctx context.Context) error {
	s.outcomes = map[string]nodeOutcome{}
	b := retryBackoff{next: 500 * time.Millisecond, max: 5 * time.Second}
	for {
		err := s.attempt(ctx)
		if err != nil && s.mayHaveReached && (ctx.Err() != nil || mayPass(err)) {
			s.mayBeCommitted = true // the coordinator may have acted on it
		}
		switch {
		case err == nil, s.finished:
			return err // the result's own error names the nodes to retry
		case ctx.Err() != nil:
			return s.cutOff(ctx, err)
		case !mayPass(err):
			return s.refused(err)
		case !s.mayBeCommitted:
			return fmt.Errorf("%s: %s; nothing was sent", s.what, sentence(err))
		}
		fmt.Fprintf(s.out, "  no answer from the coordinator (%s); asking again (the work resumes where it is)\n", sentence(err))
		if !b.wait(ctx) {
			return s.cutOff(ctx, err)
		}
	}
}

// attempt makes one call and follows its stream to the result; nil means
// the result arrived and was handled.
func (s *activationStream) attempt(ctx context.Context) error {
	client, err := s.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(streamIdleTimeout, func() { cancel(errStreamIdle) })
	defer idle.Stop()
	stream, err := s.open(actx, client)
	if !errors.As(err, new(errNotSent)) {
		s.mayHaveReached = true
	}
	for err == nil {
		var ev *pubapipb.ActivationEvent
		if ev, err = stream.Recv(); err != nil {
			break
		}
		idle.Reset(streamIdleTimeout)
		var done bool
		if done, err = s.handle(stream, ev); done {
			return err
		}
	}
	if errors.Is(context.Cause(actx), errStreamIdle) {
		return errStreamIdle
	}
	if errors.Is(err, io.EOF) {
		return errNoResult
	}
	return err
}

// handle takes one event; done is set at the result (or on an error that
// ends the work).
func (s *activationStream) handle(stream grpc.ClientStream, ev *pubapipb.ActivationEvent) (done bool, err error) {
	if s.onStarted != nil && !s.started && ev.GetStarted() == nil {
		return true, fmt.Errorf("%s: the coordinator sent %T before the cluster was created", s.what, ev.GetEvent())
	}
	s.started, s.mayBeCommitted = true, true
	switch e := ev.GetEvent().(type) {
	case *pubapipb.ActivationEvent_Started:
		if s.onStarted == nil {
			return true, fmt.Errorf("%s: the coordinator announced a new cluster", s.what)
		}
		return false, s.onStarted(stream, e.Started)
	case *pubapipb.ActivationEvent_Progress:
		fmt.Fprintf(s.out, "  %s\n", e.Progress)
	case *pubapipb.ActivationEvent_Node:
		s.report(e.Node)
	case *pubapipb.ActivationEvent_Result:
		return true, s.finish(e.Result)
	}
	return false, nil
}

// report prints a node's outcome, unless it was already printed (a stream
// asked again reports every node again).
func (s *activationStream) report(n *pubapipb.NodeResult) {
	o := nodeOutcome{failed: n.GetError() != "", retrying: n.GetRetrying()}
	switch {
	case o.retrying:
		o.line = fmt.Sprintf("  FAILED node %s: %s (the coordinator retries it)", n.GetNodePublicEndpoint(), n.GetError())
	case o.failed:
		o.line = fmt.Sprintf("  FAILED node %s: %s", n.GetNodePublicEndpoint(), n.GetError())
	default:
		o.line = fmt.Sprintf("  ok     node %s: %s, VPN IP %s, horde %s",
			n.GetNodePublicEndpoint(), n.GetPeer().GetName(), n.GetPeer().GetVpnIp(), n.GetPeer().GetHorde())
	}
	if s.outcomes[n.GetNodePublicEndpoint()].line != o.line {
		fmt.Fprintln(s.out, o.line)
	}
	s.outcomes[n.GetNodePublicEndpoint()] = o
}

// finish writes the admin's wg-quick config from the final cluster status,
// and fails (exit 1) if a node failed, saying how to retry.
func (s *activationStream) finish(res *pubapipb.ActivationResult) error {
	s.finished = true
	a := s.admin
	if err := a.writeWGQuick(res.GetCluster()); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "%d node(s) activated, %d failed; cluster revision %d\n", res.GetActivated(), res.GetFailed(), res.GetCluster().GetRevision())
	fmt.Fprintf(s.out, "this machine joins the VPN, following the cluster, with: %s (as root); or as a snapshot with: wg-quick up %s\n",
		commandLine("vpn", "up", "--admin-dir", a.path), a.file(wgQuickFile))
	var failed, retrying []string
	for _, ep := range s.nodes {
		switch o := s.outcomes[ep]; {
		case o.retrying:
			retrying = append(retrying, ep)
			failed = append(failed, ep)
		case o.failed:
			failed = append(failed, ep)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	slices.Sort(failed)
	msg := fmt.Sprintf("%d node(s) failed: %s\n", len(failed), strings.Join(failed, ", "))
	if len(retrying) > 0 {
		msg += fmt.Sprintf("the coordinator retries %s on its own (no answer, or its store could not write); 'fabric status' shows them\n",
			strings.Join(retrying, ", "))
	}
	msg += "fix them, then retry: " + commandLine("add-nodes", "--admin-dir", a.path, "--nodes", strings.Join(failed, ","))
	return &exitError{code: 1, msg: msg}
}

// refused reports an answer of the coordinator that asking again would not
// change. An invalid request is bad usage (exit 2): the coordinator names
// what is wrong, and did nothing with it.
func (s *activationStream) refused(err error) error {
	msg := fmt.Sprintf("%s: %s", s.what, sentence(err))
	if status.Code(err) == codes.InvalidArgument {
		msg += "; the coordinator did nothing with this request"
		if s.onStarted != nil && s.mayBeCommitted {
			msg += fmt.Sprintf("\nthe admin keys of the earlier request stay in %s", s.admin.path)
		}
		return &exitError{code: 2, msg: msg}
	}
	switch {
	case s.onStarted != nil && s.mayBeCommitted:
		msg += fmt.Sprintf("\nthe admin keys stay in %s; once the cause is fixed, this completes the work:\n  %s", s.admin.path, s.again)
	case s.started:
		msg += fmt.Sprintf("\nonce the cause is fixed, this completes the work:\n  %s", s.again)
	}
	return errors.New(msg)
}

// cutOff says what is known when ctx ended (the deadline, or Ctrl-C) before
// the result.
func (s *activationStream) cutOff(ctx context.Context, last error) error {
	why := "interrupted"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		why = "timed out (--timeout)"
	}
	if last != nil && !errors.Is(last, context.Canceled) && !errors.Is(last, context.DeadlineExceeded) && status.Code(last) != codes.Canceled && status.Code(last) != codes.DeadlineExceeded {
		why += "; last error: " + sentence(last)
	}
	activation := s.onStarted != nil
	var msg string
	switch {
	case !s.mayBeCommitted:
		msg = fmt.Sprintf("%s: %s before the request was sent; nothing was created", s.what, why)
	case !s.started && activation:
		msg = fmt.Sprintf("%s: %s with no answer from the coordinator: it may have created the cluster.\n"+
			"The admin keys stay in %s.\nTo finish (or start) the activation, run again:\n  %s", s.what, why, s.admin.path, s.again)
	case !s.started:
		msg = fmt.Sprintf("%s: %s with no answer from the coordinator: it may have accepted the nodes, and then finishes them on its own.\n"+
			"To see the outcome and rewrite %s, run again:\n  %s", s.what, why, wgQuickFile, s.again)
	default:
		var open []string
		for _, ep := range s.nodes {
			if _, ok := s.outcomes[ep]; !ok {
				open = append(open, ep)
			}
		}
		msg = fmt.Sprintf("%s: %s before the result", s.what, why)
		if len(open) > 0 {
			msg += fmt.Sprintf("; %d node(s) without an outcome yet: %s.\nThe coordinator finishes the nodes it accepted on its own (also after a restart, once it runs again)",
				len(open), strings.Join(open, ", "))
		} else {
			msg += "; every node was reported, only the summary is missing"
		}
		if activation {
			msg += fmt.Sprintf(".\nThe admin bundle in %s works ('fabric status')", s.admin.path)
		}
		msg += fmt.Sprintf(".\nTo see the outcome and write %s, run again:\n  %s", wgQuickFile, s.again)
	}
	return &exitError{code: 1, msg: msg}
}

// mayPass reports whether an activation call's error may pass if the call
// is made again: the connection failed or broke, nothing came, the
// coordinator was busy. Any other code is the coordinator's answer.
func mayPass(err error) bool {
	if errors.Is(err, errStreamIdle) || errors.Is(err, errNoResult) {
		return true
	}
	var ns errNotSent
	if errors.As(err, &ns) {
		err = ns.error
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.Unknown, codes.Aborted, codes.ResourceExhausted, codes.Canceled, codes.DeadlineExceeded:
		return true
	}
	return false
}

// retryBackoff doubles the wait between attempts up to max.
type retryBackoff struct{ next, max time.Duration }

// wait sleeps for the next delay; false if ctx ended first.
func (b *retryBackoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
