// Command fabricd is the fabric appliance daemon.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fabricmesh/fabric/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := node.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
