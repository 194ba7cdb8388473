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
