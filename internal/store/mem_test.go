package store_test

import (
	"testing"

	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
)

func TestMemConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) store.Store {
		s := store.NewMem()
		tb.Cleanup(func() { _ = s.Close() })
		return s
	})
}
