package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// Scenarios, in the order they run.
var scenarios = []string{"mesh", "inproc", "signed", "pastiche", "vm", "flood", "failover"}

// options are fabric-bench's flags.
type options struct {
	binDir      string
	runs        int
	only        map[string]bool
	inprocNodes int
	signedTime  time.Duration
	iperfTime   time.Duration
	pasticheMiB int
	image       string
	vmAccel     string
	// failoverNodes and failoverKills size the failover scenario.
	failoverNodes, failoverKills int
}

// Main runs the benchmarks and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	b := &bench{out: stdout, runs: o.runs, figures: map[string]any{}}
	nsErr := nshost.Check()
	if o.only["mesh"] {
		b.mesh(ctx, o, nsErr)
	}
	if o.only["inproc"] {
		b.measure(fmt.Sprintf("activate_to_converged_%d_inproc_nodes_s", o.inprocNodes), func() (time.Duration, error) {
			return inprocTime(ctx, o.inprocNodes)
		})
	}
	if o.only["signed"] {
		b.signed(ctx, o.signedTime)
	}
	if o.only["pastiche"] {
		b.pastiche(ctx, o, nsErr)
	}
	if o.only["vm"] {
		b.vm(ctx, o, nsErr)
	}
	if o.only["flood"] {
		b.flood(ctx, o, nsErr)
	}
	if o.only["failover"] {
		b.failover(ctx, o, nsErr)
	}
	line, _ := json.Marshal(b.figures)
	fmt.Fprintln(stdout, string(line))
	if b.failed {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("fabric-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.binDir, "bin-dir", "bin", "directory holding fabric, fabricd and wireguard-go")
	fs.IntVar(&o.runs, "runs", 3, "repetitions of each scenario (the median is reported)")
	only := fs.String("only", strings.Join(scenarios, ","), "comma-separated scenarios to run, of "+strings.Join(scenarios, ","))
	fs.IntVar(&o.inprocNodes, "inproc-nodes", 200, "nodes of the in-process scenario")
	fs.DurationVar(&o.signedTime, "signed-time", time.Second, "duration of each signed/unsigned gRPC measurement")
	fs.DurationVar(&o.iperfTime, "iperf-time", 10*time.Second, "duration of each iperf3 run of the pastiche scenario")
	fs.IntVar(&o.pasticheMiB, "pastiche-mib", 1024, "size in MiB of the file the pastiche scenario sends")
	fs.StringVar(&o.image, "image", "", "disk image of the vm scenario (make image: image/out/fabric.img); without it the scenario is skipped")
	fs.StringVar(&o.vmAccel, "vm-accel", "", "qemu accelerator of the vm scenario, kvm or tcg (default: KVM if it works here)")
	fs.IntVar(&o.failoverNodes, "failover-nodes", 6, "nodes of the failover scenario")
	fs.IntVar(&o.failoverKills, "failover-kills", 4, "coordinator kills per run of the failover scenario (the two coordinators in turn)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.only, err = parseOnly(*only); err != nil {
		fmt.Fprintln(stderr, err)
		return o, err
	}
	if o.runs < 1 || o.pasticheMiB < 1 || o.failoverNodes < 1 || o.failoverKills < 1 {
		err = fmt.Errorf("--runs, --pastiche-mib, --failover-nodes and --failover-kills must be at least 1")
		fmt.Fprintln(stderr, err)
		return o, err
	}
	if o.binDir, err = filepath.Abs(o.binDir); err != nil {
		fmt.Fprintln(stderr, err)
		return o, err
	}
	return o, nil
}

// parseOnly turns "mesh,signed" into a set of known scenario names.
func parseOnly(s string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(scenarios, name) {
			return nil, fmt.Errorf("--only: unknown scenario %q (want some of %s)", name, strings.Join(scenarios, ","))
		}
		set[name] = true
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("--only: no scenario given (want some of %s)", strings.Join(scenarios, ","))
	}
	return set, nil
}

type bench struct {
	out     io.Writer
	runs    int
	figures map[string]any
	failed  bool
}

// measure runs fn b.runs times and records the median, in seconds.
func (b *bench) measure(name string, fn func() (time.Duration, error)) {
	var ds []time.Duration
	for i := range b.runs {
		d, err := fn()
		if err != nil {
			b.fail(fmt.Sprintf("%s run %d", name, i+1), err)
			return
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	med := ds[len(ds)/2]
	fmt.Fprintf(b.out, "%-44s median %6.3fs  (min %.3fs, max %.3fs, %d runs)\n", name, med.Seconds(), ds[0].Seconds(), ds[len(ds)-1].Seconds(), len(ds))
	b.figures[name] = round(med.Seconds())
}

// record prints the median of values (with its unit, min and max when
// there are several) and records it as the figure name.
func (b *bench) record(name, unit string, values []float64) {
	vs := slices.Sorted(slices.Values(values))
	med := vs[len(vs)/2]
	if len(vs) == 1 {
		fmt.Fprintf(b.out, "%-44s %12.3f %s\n", name, med, unit)
	} else {
		fmt.Fprintf(b.out, "%-44s median %12.3f %s  (min %.3f, max %.3f, %d runs)\n", name, med, unit, vs[0], vs[len(vs)-1], len(vs))
	}
	b.figures[name] = round(med)
}

// ratio records num/den, printed with how it was computed.
func (b *bench) ratio(name string, num, den float64, how string) {
	if den == 0 {
		return
	}
	r := num / den
	fmt.Fprintf(b.out, "%-44s %12.3f   (%s)\n", name, r, how)
	b.figures[name] = round(r)
}

func (b *bench) fail(what string, err error) {
	fmt.Fprintf(b.out, "%s: FAILED: %v\n", what, err)
	b.failed = true
}

func (b *bench) skip(what string, why error) {
	fmt.Fprintf(b.out, "%s skipped: %v\n", what, why)
}

func round(s float64) float64 { return float64(int64(s*1000+0.5)) / 1000 }

// median of values (which it sorts).
func median(values []float64) float64 {
	slices.Sort(values)
	return values[len(values)/2]
}
