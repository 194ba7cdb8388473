// Command fabric-demo is `make demo`: a local fabric cluster on network
// namespace hosts, activated, checked and torn down.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/fabricmesh/fabric/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := demo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
