package nshost

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestProcess starts, stops and kills processes by PID and checks their logs.
func TestProcess(t *testing.T) {
	l := newLab(t, Config{Grace: 300 * time.Millisecond})
	h, err := l.AddHost(t.Context(), "h1")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("stop", func(t *testing.T) {
		p := start(t, h, "sleep", "1000")
		// ip netns exec and sh exec in place: the PID becomes sleep's own.
		waitFor(t, "sleep to run as pid "+itoa(p.PID()), func() bool { return cmdline(t, p.PID()) == "sleep 1000" })
		if err := p.Stop(t.Context()); err != nil {
			t.Errorf("Stop() = %v", err)
		}
		assertExited(t, p)
		if _, err := os.Stat("/proc/" + itoa(p.PID())); err == nil && cmdline(t, p.PID()) == "sleep 1000" {
			t.Errorf("pid %d still runs sleep after Stop", p.PID())
		}
		if err := p.Stop(t.Context()); err != nil {
			t.Errorf("second Stop() = %v", err)
		}
	})

	t.Run("kill", func(t *testing.T) {
		p := start(t, h, "sleep", "1001")
		if err := p.Kill(); err != nil {
			t.Fatalf("Kill() = %v", err)
		}
		assertExited(t, p)
		var ee *exec.ExitError
		if !errors.As(p.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("Err() after Kill = %v, want killed by SIGKILL", p.Err())
		}
		if err := p.Kill(); !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("second Kill() = %v, want os.ErrProcessDone", err)
		}
		if err := p.Stop(t.Context()); err != nil {
			t.Errorf("Stop() after Kill = %v, want nil", err)
		}
	})

	t.Run("log appends across restarts", func(t *testing.T) {
		for _, word := range []string{"first", "second"} {
			p := start(t, h, "sh", "-c", "echo "+word+"; echo "+word+"-err >&2; exec sleep 1000")
			waitFor(t, word+" in the log", func() bool { return hasLine(t, p.LogPath(), word+"-err") })
			if err := p.Stop(t.Context()); err != nil {
				t.Errorf("Stop() = %v", err)
			}
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(readFile(t, h.Dir()+"/sh.log")), "\n") {
			if strings.HasPrefix(line, "--- nshost ") {
				line = "--- nshost"
			}
			got = append(got, line)
		}
		want := []string{"--- nshost", "first", "first-err", "--- nshost", "second", "second-err"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("sh.log (-want +got):\n%s", diff)
		}
	})

	t.Run("exit status", func(t *testing.T) {
		p := start(t, h, "sh", "-c", "exit 3")
		<-p.Exited()
		err := p.Stop(t.Context())
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("Stop() = %v, want exit status 3", err)
		}
		if !strings.Contains(err.Error(), "on host h1") {
			t.Errorf("Stop() = %v, want it to name the host", err)
		}
	})

	t.Run("ignores SIGTERM", func(t *testing.T) {
		p := start(t, h, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
		waitFor(t, "the trap", func() bool { return hasLine(t, p.LogPath(), "ready") })
		err := p.Stop(t.Context())
		if err == nil || !strings.Contains(err.Error(), "SIGKILL") {
			t.Errorf("Stop() = %v, want an error saying SIGKILL was needed", err)
		}
		assertExited(t, p)
	})

	t.Run("not found", func(t *testing.T) {
		p := start(t, h, "no-such-command-nshost")
		<-p.Exited()
		if err := p.Stop(t.Context()); err == nil {
			t.Error("Stop() of a command that was not found = nil")
		}
		if log := readFile(t, p.LogPath()); !strings.Contains(log, "not found") {
			t.Errorf("log = %q, want it to say not found", log)
		}
	})
}

// TestCloseStopsProcesses: Close ends what the lab started, and then
// refuses to start more.
func TestCloseStopsProcesses(t *testing.T) {
	l := newLab(t, Config{Grace: 300 * time.Millisecond})
	h, err := l.AddHost(t.Context(), "h1")
	if err != nil {
		t.Fatal(err)
	}
	polite := start(t, h, "sleep", "1000")
	stubborn := start(t, h, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	waitFor(t, "the trap", func() bool { return hasLine(t, stubborn.LogPath(), "ready") })
	if err := l.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	assertExited(t, polite)
	assertExited(t, stubborn)
	if _, err := h.Start("sleep", "1"); err == nil {
		t.Error("Start after Close = nil error")
	}
}

func TestRunError(t *testing.T) {
	l := newLab(t, Config{})
	h, err := l.AddHost(t.Context(), "h1")
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.Run(t.Context(), "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 4")
	if err == nil {
		t.Fatal("Run() = nil error, want exit status 4")
	}
	for _, want := range []string{"host h1", `sh -c "echo to-stdout`, "exit status 4", "to-stdout", "to-stderr"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run() error = %q, want it to contain %q", err, want)
		}
	}
	if !strings.Contains(out, "to-stderr") {
		t.Errorf("Run() output = %q, want both streams", out)
	}
}

func start(t *testing.T, h *Host, name string, args ...string) *Process {
	t.Helper()
	p, err := h.Start(name, args...)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() { p.halt(context.Background()) })
	return p
}

func assertExited(t *testing.T, p *Process) {
	t.Helper()
	select {
	case <-p.Exited():
	default:
		t.Errorf("%s: Exited() not closed", p)
	}
}

// cmdline returns the command line of pid, spaces between arguments.
func cmdline(t *testing.T, pid int) string {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hasLine reports whether the file at path has a line that is exactly line.
func hasLine(t *testing.T, path, line string) bool {
	return slices.Contains(strings.Split(readFile(t, path), "\n"), line)
}
