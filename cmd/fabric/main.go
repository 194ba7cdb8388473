// Command fabric is the admin CLI of a fabric cluster.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/fabricmesh/fabric/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
