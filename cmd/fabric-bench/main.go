// Command fabric-bench is the load program of `make bench`; it ends with one
// JSON line of its figures.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/fabricmesh/fabric/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
