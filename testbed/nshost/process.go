package nshost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Process is a background process started on a host by Host.Start. Only
// its own PID is ever signalled.
type Process struct {
	host    *Host
	cmd     *exec.Cmd
	desc    string // command line, for messages
	logPath string
	// startLine is the line that marks this start in the log.
	startLine string
	grace     time.Duration
	sent      atomic.Uint64 // bit n set: we sent signal n
	exited    chan struct{}
	err       error // result of Wait; written before exited is closed
}

// StartEnv is Start with extra environment variables (KEY=VALUE) on top
// of the test's own.
func (h *Host) StartEnv(env []string, name string, args ...string) (*Process, error) {
	if env == nil {
		env = []string{}
	}
	p, err := h.start(env, name, args)
	if err != nil {
		return nil, fmt.Errorf("host %s: starting %s: %w", h.name, commandLine(name, args), err)
	}
	return p, nil
}

// Start starts name with args in the background inside the host. Its stdout
// and stderr are appended to Dir()/<base name of name>.log, after a line
// marking the start, so restarts keep the history. The lab's Close stops it
// if it is still running.
func (h *Host) Start(name string, args ...string) (*Process, error) {
	p, err := h.start(nil, name, args)
	if err != nil {
		return nil, fmt.Errorf("host %s: starting %s: %w", h.name, commandLine(name, args), err)
	}
	return p, nil
}

// start is Start with extra environment variables (nil: inherit ours).
func (h *Host) start(env []string, name string, args []string) (*Process, error) {
	return h.startArgv(env, filepath.Base(name), h.wrap(name, args), commandLine(name, args))
}

// startArgv starts ip(8) with argv as a process of h, logging to
// Dir()/<logName>.log; desc names it in messages.
func (h *Host) startArgv(env []string, logName string, argv []string, desc string) (*Process, error) {
	l := h.lab
	l.life.RLock()
	defer l.life.RUnlock()
	if l.closed {
		return nil, errors.New("lab is closed")
	}
	p := &Process{
		host:    h,
		desc:    desc,
		logPath: filepath.Join(h.dir, logName+".log"),
		grace:   l.cfg.Grace,
		exited:  make(chan struct{}),
	}
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own copy
	p.startLine = fmt.Sprintf("--- nshost %s: starting %s\n", time.Now().Format(time.RFC3339Nano), p.desc)
	fmt.Fprint(log, p.startLine)
	p.cmd = exec.Command("ip", argv...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go p.reap()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	l.log.Info("process started", "host", h.name, "pid", p.PID(), "cmd", p.desc, "log", p.logPath)
	return p, nil
}

func (p *Process) reap() {
	p.err = p.cmd.Wait()
	close(p.exited)
}

// PID returns the process ID (of the command itself, not of a wrapper).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// LogPath returns the file holding the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Exited is closed once the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err reports how the process ended: nil while it runs or after exit status
// 0, otherwise the error from waiting for it (an *exec.ExitError for a
// non-zero status or a signal).
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return p.err
	default:
		return nil
	}
}

func (p *Process) String() string {
	return fmt.Sprintf("%s (pid %d) on host %s", p.desc, p.PID(), p.host.name)
}

// Stop sends SIGTERM and waits for the process to exit. If it is still
// running after the lab's grace period, or when ctx is done, it sends
// SIGKILL and says so in its error. It returns nil when the process exited
// with status 0 or from a signal we sent, and otherwise an error wrapping
// the *exec.ExitError (also when the process had exited before Stop).
func (p *Process) Stop(ctx context.Context) error {
	forced, err := p.halt(ctx)
	if err != nil {
		return err
	}
	if forced != "" {
		return fmt.Errorf("stopping %s: %s; sent SIGKILL", p, forced)
	}
	return p.exitError()
}

// halt is SIGTERM, wait, SIGKILL. It returns why SIGKILL was needed ("" if
// it was not) and an error only if signalling failed.
func (p *Process) halt(ctx context.Context) (forced string, err error) {
	select {
	case <-p.exited:
		return "", nil
	default:
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return "", nil // it exited on its own meanwhile
		}
		return "", fmt.Errorf("stopping %s: %w", p, err)
	}
	timer := time.NewTimer(p.grace)
	defer timer.Stop()
	select {
	case <-p.exited:
		return "", nil
	case <-timer.C:
		forced = fmt.Sprintf("still running %s after SIGTERM", p.grace)
	case <-ctx.Done():
		forced = fmt.Sprintf("still running after SIGTERM when %v", ctx.Err())
	}
	if err := p.signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return forced, fmt.Errorf("killing %s: %w", p, err)
	}
	<-p.exited
	return forced, nil
}

// Continue sends SIGCONT: a process that stopped itself (SIGSTOP) goes on.
func (p *Process) Continue() error { return p.signal(syscall.SIGCONT) }

// Interrupt sends SIGINT, as Ctrl-C in a terminal would.
func (p *Process) Interrupt() error { return p.signal(syscall.SIGINT) }

// Stopped reports whether the process is stopped by a signal (SIGSTOP).
func (p *Process) Stopped() bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(data), ')')
	fields := strings.Fields(string(data[i+1:]))
	return len(fields) > 0 && fields[0] == "T"
}

// Signaled returns the signal that ended the process, if one did.
func (p *Process) Signaled() (syscall.Signal, bool) {
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) {
		return 0, false
	} else if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal(), true
	}
	return 0, false
}

// ExitCode is the process's exit status, -1 while it runs or if a signal
// ended it.
func (p *Process) ExitCode() int {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// WaitLog waits until the process's log holds a line containing s after
// its start, and returns that line.
func (p *Process) WaitLog(ctx context.Context, s string) (string, error) {
	for {
		if line, ok := p.logLine(s); ok {
			return line, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no %q in %s: %w", p, s, p.logPath, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns what the process wrote since its start.
func (p *Process) Log() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	s := string(data)
	if i := strings.LastIndex(s, p.startLine); i >= 0 {
		s = s[i+len(p.startLine):]
	}
	return s
}

func (p *Process) logLine(s string) (string, bool) {
	for _, line := range strings.Split(p.Log(), "\n") {
		if strings.Contains(line, s) {
			return line, true
		}
	}
	return "", false
}

// Kill sends SIGKILL, as a crash would, and waits until the process is
// gone. Killing a process that has already exited returns an error wrapping
// os.ErrProcessDone.
func (p *Process) Kill() error {
	err := p.signal(syscall.SIGKILL)
	if err == nil {
		<-p.exited
		return nil
	}
	return fmt.Errorf("killing %s: %w", p, err)
}

// signal records sig as ours, then sends it. A process that has exited
// gives os.ErrProcessDone (and, being reaped, its PID is never signalled).
func (p *Process) signal(sig syscall.Signal) error {
	p.sent.Or(1 << uint(sig))
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		<-p.exited
	}
	return err
}

// exitError is nil for exit status 0 or death by a signal we sent, else
// the wait error. Call only after exited is closed.
func (p *Process) exitError() error {
	<-p.exited
	if p.err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		ws, ok := ee.Sys().(syscall.WaitStatus)
		if ok && ws.Signaled() && p.sent.Load()&(1<<uint(ws.Signal())) != 0 {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", p, p.err)
}
