package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// limitedStore refuses, as etcd does past its --max-txn-ops, every Update
// that writes more than max keys.
type limitedStore struct {
	store.Store
	max                int
	refused, committed int
}

func (s *limitedStore) Update(fn func(store.Tx) error) error {
	writes := 0
	err := s.Store.Update(func(tx store.Tx) error {
		writes = 0
		if err := fn(&countingTx{Tx: tx, writes: &writes}); err != nil {
			return err
		}
		if writes > s.max {
			return fmt.Errorf("%w: %d writes, at most %d", store.ErrTooLarge, writes, s.max)
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrTooLarge):
		s.refused++
	case err == nil:
		s.committed++
	}
	return err
}

type countingTx struct {
	store.Tx
	writes *int
}

func (tx *countingTx) Put(key string, value []byte) error {
	*tx.writes++
	return tx.Tx.Put(key, value)
}

func (tx *countingTx) Delete(key string) error {
	*tx.writes++
	return tx.Tx.Delete(key)
}

// TestSplitBatch: a batch too large for one transaction of the store is
// split until each part fits; every change commits once, in order.
func TestSplitBatch(t *testing.T) {
	st := &limitedStore{Store: store.NewMem(), max: 1 << 20}
	r, err := Open(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")},
		records.Peer{Name: "coord", PublicEndpoint: "192.0.2.1:7443"}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	st.max = 8 // one reservation's writes fit, two do not
	var batch []*op
	for i := range 10 {
		batch = append(batch, &op{kind: KindFailed, done: make(chan error, 1), fn: func(m *mutation) error {
			ip, err := m.allocate()
			if err != nil {
				return err
			}
			m.put(records.Peer{Role: records.RoleNode, VPNIP: ip, PublicEndpoint: fmt.Sprintf("192.0.2.10:%d", 7000+i), State: records.StateFailed})
			return nil
		}})
	}
	r.commit(batch)
	for i, o := range batch {
		if err := <-o.done; err != nil {
			t.Errorf("change %d: %v", i, err)
		}
	}
	if st.committed != 1+10 || st.refused == 0 {
		t.Errorf("%d transactions committed, %d refused; want the Init's and one per change, after refusals", st.committed, st.refused)
	}
	if got := r.Revision(); got != 11 {
		t.Errorf("revision %d, want 11", got)
	}
	for i := range 10 {
		ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(2 + i)})
		if p, ok := r.Peer(ip); !ok || p.PublicEndpoint != fmt.Sprintf("192.0.2.10:%d", 7000+i) || p.Revision != uint64(2+i) {
			t.Errorf("%s: %+v, want change %d's record at revision %d", ip, p, i, 2+i)
		}
	}
}
