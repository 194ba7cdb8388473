// Package leakcheck fails a test binary whose tests leave goroutines
// running: call Main from TestMain.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// self marks the goroutine doing the check (the one running TestMain).
const self = "fabric/internal/leakcheck.Leaked("

// Main runs the tests and, if they passed, waits up to wait for the
// goroutines whose stacks mention one of marks (package paths such as
// "google.golang.org/grpc") to end; if some do not, it prints their stacks
// and exits with 1. It does not return.
func Main(m *testing.M, wait time.Duration, marks ...string) {
	code := m.Run()
	if code == 0 {
		if leaked := Leaked(wait, marks...); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running by the tests:\n\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// Leaked waits up to wait for the goroutines whose stacks mention one of
// marks to end, and returns the stacks of those that did not ("" if none).
func Leaked(wait time.Duration, marks ...string) string {
	deadline := time.Now().Add(wait)
	for {
		leaked := matching(marks)
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func matching(marks []string) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, self) {
			continue
		}
		for _, m := range marks {
			if strings.Contains(g, m) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
