package registry_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/store"
)

// TestSetWGEndpoint: a node's endpoint stays at the IP of its public
// endpoint; an admin's may be anywhere and may be cleared; refusals and
// the same endpoint again change nothing.
func TestSetWGEndpoint(t *testing.T) {
	r := initRegistry(t, store.NewMem(), "203.0.113.0/24", 1)
	node := activateNode(t, r, 0)
	admin := netip.MustParseAddr("203.0.113.2")
	nodeMoved := netip.AddrPortFrom(nodeIP(0), 51999).String()
	tests := []struct {
		name     string
		ip       netip.Addr
		endpoint string
		want     string // the recorded endpoint after the call
		wantErr  string // substring; "" for success
	}{
		{name: "node moves its port", ip: node.VPNIP, endpoint: nodeMoved, want: nodeMoved},
		{name: "node at the same endpoint", ip: node.VPNIP, endpoint: nodeMoved, want: nodeMoved},
		{name: "node at another IP", ip: node.VPNIP, endpoint: "198.51.100.9:51820", want: nodeMoved, wantErr: "not at the IP of its public endpoint"},
		{name: "node clears its endpoint", ip: node.VPNIP, endpoint: "", want: nodeMoved, wantErr: "want IP:PORT"},
		{name: "node port 0", ip: node.VPNIP, endpoint: netip.AddrPortFrom(nodeIP(0), 0).String(), want: nodeMoved, wantErr: "want IP:PORT"},
		{name: "admin anywhere", ip: admin, endpoint: "198.51.100.9:51821", want: "198.51.100.9:51821"},
		{name: "admin malformed", ip: admin, endpoint: "198.51.100.9", want: "198.51.100.9:51821", wantErr: "want IP:PORT"},
		{name: "admin roams", ip: admin, endpoint: "", want: ""},
		{name: "admin roams again", ip: admin, endpoint: "", want: ""},
		{name: "unknown peer", ip: netip.MustParseAddr("203.0.113.200"), endpoint: "198.51.100.9:51821", wantErr: "unknown peer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := r.Revision()
			before, _ := r.Peer(tt.ip)
			err := r.SetWGEndpoint(tt.ip, tt.endpoint)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("SetWGEndpoint(%s, %q) = %v", tt.ip, tt.endpoint, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("SetWGEndpoint(%s, %q) = %v, want an error with %q", tt.ip, tt.endpoint, err, tt.wantErr)
			case (tt.wantErr != "" || before.WGEndpoint == tt.endpoint) && r.Revision() != rev:
				t.Errorf("an endpoint refused or unchanged moved the revision from %d to %d", rev, r.Revision())
			}
			if tt.wantErr == "unknown peer" {
				if !errors.Is(err, registry.ErrUnknownPeer) {
					t.Errorf("error %v is not ErrUnknownPeer", err)
				}
				return
			}
			if p, _ := r.Peer(tt.ip); p.WGEndpoint != tt.want {
				t.Errorf("recorded endpoint %q, want %q", p.WGEndpoint, tt.want)
			}
		})
	}
}
