package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// Errors of node activations.
var (
	// ErrUnanswered marks a NodeActivator error whose outcome is unknown:
	// the call may not have reached the node, or the node's answer was
	// lost (unreachable, timed out, connection broken). Implementations
	// wrap it; any other error is the node's answer.
	ErrUnanswered = errors.New("no answer from the node")
	// ErrBusy: the peer is in the middle of an activation; the same
	// request later may succeed.
	ErrBusy = errors.New("busy")
)

// A coordinator records, before it touches a node, that it must bring that
// node to an outcome: the activation intents. They are written in the same
// transaction as the cluster (activation) or before any node is called
// (add-nodes), and deleted once a node's outcome is final: active, or
// refused by the node or the registry. A node whose activation failed for
// a reason that may pass (unreachable, timed out, the store could not
// write) keeps its intent, and the coordinator retries it with backoff, also
// after a restart. That is what makes an activation converge after a crash
// at any point without an admin:
//
//	core/activation/intents/<publicEndpoint>   {"recorded": time}
const prefixIntents = "core/activation/intents/"

type intent struct {
	Recorded time.Time `json:"recorded"`
}

// Recovery retries intents with backoff from RecoveryMinBackoff, doubling up
// to RecoveryMaxBackoff (defaults).
const (
	DefaultRecoveryMinBackoff = time.Second
	DefaultRecoveryMaxBackoff = time.Minute
)

// retryable marks an activation error that may pass on its own; any other
// error is a refusal that only an admin can fix.
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

func isRetryable(err error) bool {
	var r retryable
	return errors.As(err, &r)
}

// mayPass wraps err as retryable if it is a NodeActivator error without an
// answer or a busy node.
func mayPass(err error) error {
	if errors.Is(err, ErrUnanswered) || errors.Is(err, ErrBusy) || errors.Is(err, context.DeadlineExceeded) {
		return retryable{err}
	}
	return err
}

// registryRefused reports whether a registry error is a decision about the
// records (a conflict, a removed peer, a full CIDR) rather than a store that
// failed to write.
func registryRefused(err error) bool {
	for _, refusal := range []error{records.ErrConflict, records.ErrRemoved, records.ErrCIDRFull,
		records.ErrNotInitialized, records.ErrUnknownPeer, records.ErrAlreadyActive} {
		if errors.Is(err, refusal) {
			return true
		}
	}
	return false
}

// storeOrRefusal wraps a registry error as retryable unless it is a
// refusal.
func storeOrRefusal(err error) error {
	if err == nil || registryRefused(err) {
		return err
	}
	return retryable{err}
}

// activations is a coordinator's node activations in flight and the
// intents it retries.
type activations struct {
	sem chan struct{} // bounds the node activations at once

	mu      sync.Mutex
	flights map[string]*flight // by endpoint
	retries map[string]*retry  // intents waiting for their next attempt
	settled []string           // intents whose outcome is final, not yet deleted
	wake    chan struct{}      // a retry was scheduled
}

type flight struct {
	done chan struct{}
	res  NodeResult
}

type retry struct {
	at    time.Time
	delay time.Duration
	busy  bool // an attempt is running
}

func newActivations(concurrency int) *activations {
	return &activations{
		sem:     make(chan struct{}, concurrency),
		flights: map[string]*flight{}, retries: map[string]*retry{},
		wake: make(chan struct{}, 1),
	}
}

func intentsTx(endpoints []string, now time.Time) func(store.Tx) error {
	return func(tx store.Tx) error {
		for _, ep := range endpoints {
			if err := store.PutJSON(tx, prefixIntents+ep, intent{Recorded: now}); err != nil {
				return err
			}
		}
		return nil
	}
}

// recordIntents persists the intents to activate endpoints.
func (c *Core) recordIntents(endpoints []string) error {
	if err := c.cfg.Store.Update(intentsTx(endpoints, c.cfg.Now())); err != nil {
		return fmt.Errorf("recording the nodes to activate: %w", err)
	}
	return nil
}

// loadIntents returns the endpoints the coordinator must still bring to an
// outcome: its intents, and the nodes its registry holds as pending (a
// store from before intents). A registry shared by several coordinators
// leaves its pending nodes to the coordinator whose intents they are.
func (c *Core) loadIntents() ([]string, error) {
	var out []string
	err := c.cfg.Store.View(func(tx store.Tx) error {
		return tx.Scan(prefixIntents, func(key string, _ []byte) error {
			out = append(out, strings.TrimPrefix(key, prefixIntents))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading the nodes to activate: %w", err)
	}
	if c.cfg.SharedRegistry {
		slices.Sort(out)
		return out, nil
	}
	_, peers := c.reg.Peers()
	for _, p := range peers {
		if p.Role == records.RoleNode && p.State == records.StatePending && !slices.Contains(out, p.PublicEndpoint) {
			out = append(out, p.PublicEndpoint)
		}
	}
	slices.Sort(out)
	return out, nil
}

// settle takes a node's outcome: a final one (active, or refused) ends its
// intent; one that may pass schedules a retry.
func (a *activations) settle(endpoint string, r NodeResult, minDelay, maxDelay time.Duration, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !r.Retrying {
		delete(a.retries, endpoint)
		a.settled = append(a.settled, endpoint)
		return
	}
	rt := a.retries[endpoint]
	if rt == nil {
		rt = &retry{delay: minDelay}
		a.retries[endpoint] = rt
	} else {
		rt.delay = min(2*rt.delay, maxDelay)
	}
	rt.at, rt.busy = now.Add(rt.delay), false
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// schedule makes endpoints due for an attempt now (a restart).
func (a *activations) schedule(endpoints []string, minDelay time.Duration, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ep := range endpoints {
		if a.retries[ep] == nil {
			a.retries[ep] = &retry{at: now, delay: minDelay}
		}
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// forget drops the intent of endpoint from memory (see Core.forgetIntent).
func (a *activations) forget(endpoint string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.retries, endpoint)
}

// due returns the retries whose time has come, marked busy, and when the
// next one is due (zero: none waiting).
func (a *activations) due(now time.Time) (due []string, next time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ep, rt := range a.retries {
		switch {
		case rt.busy:
		case !rt.at.After(now):
			rt.busy = true
			due = append(due, ep)
		case next.IsZero() || rt.at.Before(next):
			next = rt.at
		}
	}
	slices.Sort(due)
	return due, next
}

// takeSettled returns the intents to delete and forgets them.
func (a *activations) takeSettled() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.settled
	a.settled = nil
	return out
}

// pending is the number of intents waiting for a retry.
func (a *activations) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.retries)
}

// flushSettled deletes the intents whose outcome is final, in one
// transaction. If it fails they are deleted with the next flush; after a
// crash they are retried once more, which is harmless: an active node is
// recognized, a refusal is given again.
func (c *Core) flushSettled() {
	eps := c.acts.takeSettled()
	if len(eps) == 0 {
		return
	}
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		for _, ep := range eps {
			if err := tx.Delete(prefixIntents + ep); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.log.Warn("deleting the intents of nodes whose activation ended; will try again", "nodes", len(eps), "err", err)
		c.acts.mu.Lock()
		c.acts.settled = append(c.acts.settled, eps...)
		c.acts.mu.Unlock()
	}
}

// forgetIntent ends the intent of a removed node: it is not retried any
// more.
func (c *Core) forgetIntent(endpoint string) {
	c.acts.forget(endpoint)
	if err := c.cfg.Store.Update(func(tx store.Tx) error { return tx.Delete(prefixIntents + endpoint) }); err != nil {
		c.log.Warn("deleting the intent of a removed node", "node", endpoint, "err", err)
	}
}

// activateNodeOnce runs the activation of endpoint, or waits for the one in
// flight (an admin's add-nodes during a recovery, a resumed activation) and
// returns its outcome. The caller holds a slot of acts.sem.
func (c *Core) activateNodeOnce(ctx context.Context, endpoint string) NodeResult {
	a := c.acts
	a.mu.Lock()
	if f := a.flights[endpoint]; f != nil {
		a.mu.Unlock()
		select {
		case <-f.done:
			return f.res
		case <-ctx.Done():
			return NodeResult{NodePublicEndpoint: endpoint, Err: ctx.Err(), Retrying: true}
		}
	}
	f := &flight{done: make(chan struct{})}
	a.flights[endpoint] = f
	a.mu.Unlock()
	f.res = c.activateNode(ctx, endpoint)
	a.mu.Lock()
	delete(a.flights, endpoint)
	a.mu.Unlock()
	close(f.done)
	c.acts.settle(endpoint, f.res, c.cfg.RecoveryMinBackoff, c.cfg.RecoveryMaxBackoff, c.cfg.Now())
	return f.res
}

// recoveryLoop retries the intents that are due until ctx ends: those of a
// restarted coordinator at once, and those whose last attempt may pass
// with backoff.
func (c *Core) recoveryLoop(ctx context.Context) {
	for {
		due, next := c.acts.due(c.cfg.Now())
		if len(due) > 0 {
			c.retryIntents(ctx, due)
			continue
		}
		if !c.waitForRetry(ctx, next) {
			return
		}
	}
}

// waitForRetry waits until next (zero: until a retry is scheduled) or a
// retry is scheduled; false means ctx ended.
func (c *Core) waitForRetry(ctx context.Context, next time.Time) bool {
	var timer <-chan time.Time
	if !next.IsZero() {
		t := time.NewTimer(next.Sub(c.cfg.Now()))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-c.acts.wake:
	case <-timer:
	}
	return true
}

// retryIntents runs one attempt for each endpoint, concurrently within the
// activation bound. A node the registry already holds as active needs no
// call: its activation ended.
func (c *Core) retryIntents(ctx context.Context, endpoints []string) {
	c.log.Info("resuming node activations", "nodes", len(endpoints))
	var wg sync.WaitGroup
	for _, ep := range endpoints {
		if p, ok := c.reg.PeerByEndpoint(ep); ok && p.State == records.StateActive {
			c.acts.settle(ep, NodeResult{NodePublicEndpoint: ep, Peer: p}, 0, 0, c.cfg.Now())
			continue
		}
		select {
		case c.acts.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-c.acts.sem; wg.Done() }()
			r := c.activateNodeOnce(ctx, ep)
			if r.Err != nil {
				c.log.Warn("resumed node activation failed", "node", ep, "retrying", r.Retrying, "err", r.Err)
			} else {
				c.log.Info("resumed node activation done", "node", ep, "name", r.Peer.Name, "vpnIP", r.Peer.VPNIP)
			}
		}()
	}
	wg.Wait()
	c.flushSettled()
}
