package registry_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

func TestSetRegistration(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	node := activateNode(t, r, 0)
	reeveKey := key(0x5e)

	ok, err := r.SetRegistration(node.VPNIP, reeveKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if !ok.Registered || string(ok.ReevePubKey) != string(reeveKey) || ok.RegisteredAt.IsZero() || ok.RegistrationError != "" {
		t.Errorf("after a registration: %+v", ok)
	}
	failed, err := r.SetRegistration(node.VPNIP, reeveKey, "callback: bad signature")
	if err != nil {
		t.Fatal(err)
	}
	if failed.Registered || failed.ReevePubKey != nil || !failed.RegisteredAt.IsZero() || failed.RegistrationError != "callback: bad signature" {
		t.Errorf("after a failed registration: %+v", failed)
	}

	admin := netip.MustParseAddr("203.0.113.2")
	if p, ok := r.Peer(admin); !ok || p.Role != records.RoleAdmin {
		t.Fatalf("%s is %+v, want the admin", admin, p)
	}
	rev := r.Revision()
	if again, err := r.SetRegistration(node.VPNIP, reeveKey, "callback: bad signature"); err != nil || again.Revision != failed.Revision {
		t.Errorf("the same failure again: %+v, %v; want the record unchanged", again, err)
	}
	for _, tt := range []struct {
		name string
		ip   netip.Addr
	}{
		{"unknown IP", netip.MustParseAddr("203.0.113.200")},
		{"admin", admin},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.SetRegistration(tt.ip, reeveKey, ""); !errors.Is(err, registry.ErrUnknownPeer) {
				t.Errorf("SetRegistration(%s) = %v, want ErrUnknownPeer", tt.ip, err)
			}
		})
	}
	if got := r.Revision(); got != rev {
		t.Errorf("refused registrations moved the revision from %d to %d", rev, got)
	}
}

// TestSetRegistrationSince: two coordinators on one store. A handshake
// that started before the other coordinator recorded a later attempt of
// the node records nothing when it ends (a late failure does not undo the
// registration); one that started from the current record is recorded.
func TestSetRegistrationSince(t *testing.T) {
	st := store.NewMem()
	a := initRegistry(t, st, "203.0.113.0/24", 0)
	b, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	node := activateNode(t, a, 0)
	startedAtA := node // a's handshake starts, its callback hangs
	if err := b.CatchUp(); err != nil {
		t.Fatal(err)
	}
	registered, err := b.SetRegistrationSince(node, key(0x5e), "") // the node's next attempt, through b
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetRegistrationSince(startedAtA, key(0x5e), "calling back the reeve: deadline exceeded"); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("a late failure after the other coordinator's registration: %v, want ErrConflict", err)
	}
	if err := a.CatchUp(); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Peer(node.VPNIP); !got.Registered || got.Revision != registered.Revision {
		t.Errorf("after the late failure: %+v, want the registration of revision %d", got, registered.Revision)
	}
	failed, err := a.SetRegistrationSince(registered, key(0x5e), "the reeve did not sign")
	if err != nil || failed.Registered || failed.RegistrationError != "the reeve did not sign" {
		t.Errorf("a failure of a handshake that started from the current record: %+v, %v; want it recorded", failed, err)
	}
}
