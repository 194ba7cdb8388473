package registry_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/google/go-cmp/cmp"
)

func TestParseVPNCIDR(t *testing.T) {
	tests := []struct {
		in      string
		want    netip.Prefix
		wantErr string // substring of the error; "" for success
	}{
		{in: "203.0.113.0/24", want: netip.MustParsePrefix("203.0.113.0/24")},
		{in: "10.0.0.0/8", want: netip.MustParsePrefix("10.0.0.0/8")},
		{in: "203.0.113.0/29", want: netip.MustParsePrefix("203.0.113.0/29")},
		{in: "fd00:fab::/64", want: netip.MustParsePrefix("fd00:fab::/64")},
		{in: "fd00:fab::/126", want: netip.MustParsePrefix("fd00:fab::/126")},
		{in: "203.0.113.7/24", wantErr: "host bits set); did you mean 203.0.113.0/24?"},
		{in: "fd00:fab::1/64", wantErr: "did you mean fd00:fab::/64?"},
		{in: "203.0.113.0/30", wantErr: "too small to hold a node beside the coordinator and the admin; the prefix length must be at most /29"},
		{in: "203.0.113.0/31", wantErr: "too small"},
		{in: "203.0.113.1/32", wantErr: "too small"},
		{in: "fd00:fab::/127", wantErr: "the prefix length must be at most /126"},
		{in: "", wantErr: "not a CIDR like 203.0.113.0/24"},
		{in: "203.0.113.0", wantErr: "not a CIDR"},
		{in: "203.0.113.0/33", wantErr: "not a CIDR"},
		{in: "vpn", wantErr: `vpn cidr "vpn": not a CIDR`},
		{in: "fe80::%eth0/64", wantErr: "vpn cidr"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := records.ParseVPNCIDR(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseVPNCIDR(%q): %v", tt.in, err)
				}
				if got != tt.want {
					t.Errorf("ParseVPNCIDR(%q) = %s, want %s", tt.in, got, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseVPNCIDR(%q) = %s, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
		})
	}
}

// TestAllocationOrder: the coordinator has the first address, the admins
// the next ones and the nodes come after, in the order they are seen.
func TestAllocationOrder(t *testing.T) {
	tests := []struct {
		cidr   string
		admins int
		nodes  int
		want   []string // VPN IPs: coordinator, admins, nodes
	}{
		{"203.0.113.0/24", 1, 3, []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"}},
		{"203.0.113.0/24", 2, 1, []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"}},
		{"203.0.113.0/24", 0, 2, []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"}},
		{"fd00:fab::/64", 1, 2, []string{"fd00:fab::1", "fd00:fab::2", "fd00:fab::3", "fd00:fab::4"}},
		{"10.0.0.248/29", 1, 4, []string{"10.0.0.249", "10.0.0.250", "10.0.0.251", "10.0.0.252", "10.0.0.253", "10.0.0.254"}},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			for _, sk := range storeKinds() {
				t.Run(sk.name, func(t *testing.T) {
					r := initRegistry(t, sk.open(t), tt.cidr, tt.admins)
					for i := range tt.nodes {
						activateNode(t, r, byte(i))
					}
					_, peers := r.Peers()
					var got []string
					for _, p := range peers {
						got = append(got, p.VPNIP.String())
					}
					if diff := cmp.Diff(tt.want, got); diff != "" {
						t.Errorf("VPN IPs (-want +got):\n%s", diff)
					}
					wantRoles := []records.Role{records.RoleCoordinator}
					for range tt.admins {
						wantRoles = append(wantRoles, records.RoleAdmin)
					}
					for range tt.nodes {
						wantRoles = append(wantRoles, records.RoleNode)
					}
					var gotRoles []records.Role
					for _, p := range peers {
						gotRoles = append(gotRoles, p.Role)
					}
					if diff := cmp.Diff(wantRoles, gotRoles); diff != "" {
						t.Errorf("roles in VPN IP order (-want +got):\n%s", diff)
					}
					c, _ := r.Cluster()
					if c.CoordinatorVPNIP.String() != tt.want[0] {
						t.Errorf("Cluster().CoordinatorVPNIP = %s, want %s", c.CoordinatorVPNIP, tt.want[0])
					}
				})
			}
		})
	}
}

// TestCIDRFull: once every usable address has been handed out, reserving
// or failing a new endpoint gives ErrCIDRFull and changes nothing.
func TestCIDRFull(t *testing.T) {
	tests := []struct {
		cidr    string
		usable  int
		wantMsg string
	}{
		{"203.0.113.0/29", 6, "203.0.113.0/29 has 6 usable addresses and all have been allocated"},
		{"fd00:fab::/126", 3, "fd00:fab::/126 has 3 usable addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			for _, sk := range storeKinds() {
				t.Run(sk.name, func(t *testing.T) {
					st := sk.open(t)
					r := initRegistry(t, st, tt.cidr, 1)
					// Coordinator and admin take two addresses; a node
					// that fails keeps its address too.
					for i := range tt.usable - 2 {
						if i%2 == 0 {
							activateNode(t, r, byte(i))
						} else if _, err := r.Fail(nodeEndpoint(byte(i)), "unreachable"); err != nil {
							t.Fatalf("Fail: %v", err)
						}
					}
					before, beforeStore := stateOf(r), storetest.Dump(t, st)
					next := byte(tt.usable)
					checks := []struct {
						name string
						do   func() (records.Peer, error)
					}{
						{"Reserve", func() (records.Peer, error) { return r.Reserve(nodeEndpoint(next), nodeName(next), nil, nil, false) }},
						{"Fail", func() (records.Peer, error) { return r.Fail(nodeEndpoint(next), "unreachable") }},
					}
					for _, c := range checks {
						p, err := c.do()
						if !errors.Is(err, registry.ErrCIDRFull) {
							t.Fatalf("%s of a new endpoint in a full CIDR = %+v, %v; want ErrCIDRFull", c.name, p, err)
						}
						if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), nodeEndpoint(next)) {
							t.Errorf("%s error %q should name the endpoint and say %q", c.name, err, tt.wantMsg)
						}
						if diff := cmp.Diff(before, stateOf(r), cmpNetip); diff != "" {
							t.Errorf("%s in a full CIDR changed the registry (-before +after):\n%s", c.name, diff)
						}
						if diff := cmp.Diff(beforeStore, storetest.Dump(t, st)); diff != "" {
							t.Errorf("%s in a full CIDR changed the store (-before +after):\n%s", c.name, diff)
						}
					}
					// The failed node still gets its own address back.
					if tt.usable-2 > 1 {
						p, err := r.Reserve(nodeEndpoint(1), nodeName(1), nil, nil, false)
						if err != nil {
							t.Fatalf("retrying a failed node in a full CIDR: %v", err)
						}
						if p.VPNIP != before.Peers[3].VPNIP {
							t.Errorf("retried node got %s, want its reserved %s", p.VPNIP, before.Peers[3].VPNIP)
						}
					}
				})
			}
		})
	}
}

// TestInitCIDRTooSmallForAdmins: Init allocating more admins than the CIDR
// holds fails as a whole.
func TestInitCIDRTooSmallForAdmins(t *testing.T) {
	st := store.NewMem()
	r, err := registry.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	// A /29 gives 6 addresses: the coordinator and 5 admins.
	_, err = r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/29")}, coordinatorPeer(),
		[]records.Peer{admin(0), admin(1), admin(2), admin(3), admin(4), admin(5)}, nil, nil)
	if !errors.Is(err, registry.ErrCIDRFull) {
		t.Fatalf("Init with 6 admins in a /29 = %v, want ErrCIDRFull", err)
	}
	if diff := cmp.Diff(regState{}, stateOf(r), cmpNetip); diff != "" {
		t.Errorf("failed Init changed the registry (-want +got):\n%s", diff)
	}
	if got := storetest.Dump(t, st); len(got) != 0 {
		t.Errorf("failed Init wrote %v", got)
	}
}
