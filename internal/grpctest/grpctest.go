// Package grpctest runs gRPC servers for tests.
package grpctest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
)

// Serve serves srv on lis until the test ends, then stops it and waits
// for Serve to return, so that no goroutine outlives the test.
func Serve(tb testing.TB, srv *grpc.Server, lis net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
	})
}
