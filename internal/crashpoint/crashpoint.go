package crashpoint

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Environment variables that arm the points.
const (
	EnvCrash = "FABRIC_CRASH_AT"
	EnvPause = "FABRIC_PAUSE_AT"
)

// Log lines written to stderr when a point fires, followed by the point's
// name.
const (
	CrashLine = "fabric crashpoint: killing process at "
	PauseLine = "fabric crashpoint: pausing process at "
)

// Point is a named place in the code where a test may crash the process.
type Point struct{ p *point }

type point struct {
	name, doc string
	hits      atomic.Int64
}

// Info describes a declared point.
type Info struct {
	Name string
	// Doc says where the point is: what has happened and what has not.
	Doc string
}

// action is what an armed point does on a given hit.
type action struct {
	signal syscall.Signal
	line   string
	hit    int64
}

var (
	mu       sync.Mutex
	declared = map[string]*point{}
	armed    atomic.Bool
	actions  map[string]action // set once by init, read-only after
)

func init() {
	a, err := parse(os.Getenv(EnvCrash), os.Getenv(EnvPause))
	if err != nil {
		fmt.Fprintf(os.Stderr, "fabric crashpoint: %v\n", err)
		os.Exit(2)
	}
	actions = a
	armed.Store(len(a) > 0)
}

// parse reads the two variables' lists into actions by point name.
func parse(crash, pause string) (map[string]action, error) {
	out := map[string]action{}
	for _, v := range []struct {
		env, list string
		a         action
	}{{EnvCrash, crash, action{signal: syscall.SIGKILL, line: CrashLine}}, {EnvPause, pause, action{signal: syscall.SIGSTOP, line: PauseLine}}} {
		for _, item := range strings.Split(v.list, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			name, count, found := strings.Cut(item, ":")
			a := v.a
			a.hit = 1
			if found {
				n, err := strconv.ParseInt(count, 10, 64)
				if err != nil || n < 1 {
					return nil, fmt.Errorf("%s: %q: want NAME or NAME:N with N >= 1", v.env, item)
				}
				a.hit = n
			}
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("%s: point %q is named twice", v.env, name)
			}
			out[name] = a
		}
	}
	return out, nil
}

// New declares a point. Names are unique: declaring one twice panics (two
// places would share one name and a test could not tell them apart).
func New(name, doc string) Point {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := declared[name]; dup || name == "" || strings.ContainsAny(name, ",: ") {
		panic(fmt.Sprintf("crashpoint: bad or duplicate point name %q", name))
	}
	p := &point{name: name, doc: doc}
	declared[name] = p
	return Point{p}
}

// Name returns the point's name.
func (p Point) Name() string { return p.p.name }

// Hit crashes or pauses the process if the environment armed this point for
// this hit; otherwise it does nothing.
func (p Point) Hit() {
	if !armed.Load() {
		return
	}
	a, ok := actions[p.p.name]
	if !ok || p.p.hits.Add(1) != a.hit {
		return
	}
	fmt.Fprintf(os.Stderr, "%s%s\n", a.line, p.p.name)
	// The signal goes to this thread: a signal to the process is taken by
	// any of its threads, and until that one runs (seconds on a loaded
	// machine) this goroutine would go on past the point. A stop signal to
	// this thread stops the whole process before the call returns.
	runtime.LockOSThread()
	_ = syscall.Tgkill(os.Getpid(), syscall.Gettid(), a.signal)
	runtime.UnlockOSThread()
	if a.signal == syscall.SIGKILL {
		select {} // the signal is on its way
	}
}

// CheckArmed returns an error naming the points the environment arms that
// were never declared (a typo would otherwise make a test wait for a crash
// that cannot come). Call it once every package has been initialized.
func CheckArmed() error {
	mu.Lock()
	defer mu.Unlock()
	var unknown []string
	for name := range actions {
		if declared[name] == nil {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("%s/%s name unknown crash points: %s", EnvCrash, EnvPause, strings.Join(unknown, ", "))
}

// All returns every declared point, sorted by name.
func All() []Info {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Info, 0, len(declared))
	for _, p := range declared {
		out = append(out, Info{Name: p.name, Doc: p.doc})
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out
}
