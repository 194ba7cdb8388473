// Command fabric-demo is `make demo`: a local fabric cluster on network
// namespace hosts, activated, checked and torn down.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fabricmesh/fabric/testbed/demo"
)

func main() {
	// Tear down on Ctrl-C, kill or hangup, and keep going when stdout is a
	// closed pipe (| head), so the namespaces and fabricds never leak.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := demo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
