// Command fabric-scale is the program of `make bench-scale`: a real
// coordinator and a simulator process holding thousands of nodes; it ends
// with one JSON line of figures per number of nodes. `fabric-scale
// simulate` is the simulator process it starts.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fabricmesh/fabric/testbed/scale"
)

func main() {
	// Tear down on Ctrl-C, kill or hangup, and keep going when stdout is a
	// closed pipe (| head), so the namespaces and processes never leak.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := scale.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
