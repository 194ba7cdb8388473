// Package dialopts holds the gRPC dial options every fabric client shares.
package dialopts

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Reconnect makes a client reconnect quickly after its peer comes back:
// gRPC's default backoff grows to two minutes, so a node whose coordinator
// was down for a while would take that long to notice it is back.
func Reconnect() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	})
}
