package crashpoint

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as the process under test: with
// CRASHPOINT_TEST_CHILD set it hits the test points and exits 0.
var (
	testFirst  = New("crashpoint-test/first", "the first point of the child")
	testSecond = New("crashpoint-test/second", "the second point of the child, hit three times")
)

func TestMain(m *testing.M) {
	if os.Getenv("CRASHPOINT_TEST_CHILD") != "" {
		if err := CheckArmed(); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(3)
		}
		testFirst.Hit()
		for range 3 {
			testSecond.Hit()
		}
		os.Stderr.WriteString("child done\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, crash, pause string
		want               map[string]action
		wantErr            string
	}{
		{name: "nothing", want: map[string]action{}},
		{name: "one crash", crash: "a/b", want: map[string]action{"a/b": {signal: syscall.SIGKILL, line: CrashLine, hit: 1}}},
		{name: "counts and both lists", crash: " a:3 , b ", pause: "c:2", want: map[string]action{
			"a": {signal: syscall.SIGKILL, line: CrashLine, hit: 3},
			"b": {signal: syscall.SIGKILL, line: CrashLine, hit: 1},
			"c": {signal: syscall.SIGSTOP, line: PauseLine, hit: 2},
		}},
		{name: "zero count", crash: "a:0", wantErr: "want NAME or NAME:N"},
		{name: "bad count", pause: "a:x", wantErr: "FABRIC_PAUSE_AT"},
		{name: "twice", crash: "a", pause: "a:2", wantErr: "named twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.crash, tt.pause)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse = %v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(action{})); diff != "" {
				t.Errorf("parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewRefusesDuplicatesAndBadNames(t *testing.T) {
	for _, name := range []string{"crashpoint-test/first", "", "a,b", "a:1", "a b"} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%q) did not panic", name)
				}
			}()
			New(name, "")
		})
	}
}

func TestAll(t *testing.T) {
	var names []string
	for _, p := range All() {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"crashpoint-test/first", "crashpoint-test/second"}, names); diff != "" {
		t.Errorf("All (-want +got):\n%s", diff)
	}
}

// child starts the test binary as the process under test with env.
func child(t *testing.T, env ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "CRASHPOINT_TEST_CHILD=1")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stderr
}

func waitStatus(t *testing.T, cmd *exec.Cmd) syscall.WaitStatus {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func TestHit(t *testing.T) {
	tests := []struct {
		name       string
		env        []string
		wantKilled bool
		wantStderr string
	}{
		{"not armed", nil, false, "child done\n"},
		{"other point", []string{EnvCrash + "=crashpoint-test/second:4"}, false, "child done\n"},
		{"first point", []string{EnvCrash + "=crashpoint-test/first"}, true, CrashLine + "crashpoint-test/first\n"},
		{"third hit", []string{EnvCrash + "=crashpoint-test/second:3"}, true, CrashLine + "crashpoint-test/second\n"},
		{"unknown point", []string{EnvCrash + "=crashpoint-test/typo"}, false, "FABRIC_CRASH_AT/FABRIC_PAUSE_AT name unknown crash points: crashpoint-test/typo\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, stderr := child(t, tt.env...)
			ws := waitStatus(t, cmd)
			if killed := ws.Signaled() && ws.Signal() == syscall.SIGKILL; killed != tt.wantKilled {
				t.Errorf("child ended with %v, killed by SIGKILL = %v, want %v", ws, killed, tt.wantKilled)
			}
			if got := stderr.String(); got != tt.wantStderr {
				t.Errorf("child's stderr = %q, want %q", got, tt.wantStderr)
			}
		})
	}
}

func TestPause(t *testing.T) {
	cmd, stderr := child(t, EnvPause+"=crashpoint-test/second:2")
	stopped := func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			return false
		}
		fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		return len(fields) > 0 && fields[0] == "T"
	}
	deadline := time.Now().Add(20 * time.Second)
	for !stopped() {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the child never stopped at its pause point; stderr %q", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if ws := waitStatus(t, cmd); ws.ExitStatus() != 0 {
		t.Errorf("child ended with %v after SIGCONT, want exit 0", ws)
	}
	if want := PauseLine + "crashpoint-test/second\nchild done\n"; stderr.String() != want {
		t.Errorf("child's stderr = %q, want %q", stderr.String(), want)
	}
}
