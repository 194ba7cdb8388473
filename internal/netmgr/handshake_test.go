package netmgr

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestHoldKeepalives(t *testing.T) {
	ka := 25 * time.Second
	endpoint := &net.UDPAddr{IP: net.ParseIP("198.51.100.9"), Port: 51820}
	peer := func(n byte, keepalive *time.Duration, withEndpoint bool) wgtypes.PeerConfig {
		p := wgtypes.PeerConfig{PublicKey: testKey(n), PersistentKeepaliveInterval: keepalive,
			AllowedIPs: []net.IPNet{{IP: net.IPv4(203, 0, 113, n), Mask: net.CIDRMask(32, 32)}}}
		if withEndpoint {
			p.Endpoint = endpoint
		}
		return p
	}
	self := netip.MustParseAddr("203.0.113.5")
	liveKA := map[byte]time.Duration{3: ka} // peer 7 is live without a keepalive
	tests := []struct {
		name     string
		live     []byte
		held     []byte
		desired  []wgtypes.PeerConfig
		wantHeld []byte
	}{
		{"new lower address is held back", nil, nil, []wgtypes.PeerConfig{peer(3, &ka, true)}, []byte{3}},
		{"new higher address: we initiate", nil, nil, []wgtypes.PeerConfig{peer(7, &ka, true)}, nil},
		{"live peer with a keepalive is not held", []byte{3}, nil, []wgtypes.PeerConfig{peer(3, &ka, true)}, nil},
		{"live peer getting its keepalive is held", []byte{7}, nil, []wgtypes.PeerConfig{peer(7, &ka, true)}, []byte{7}},
		{"held stays held while desired", []byte{3}, []byte{3}, []wgtypes.PeerConfig{peer(3, &ka, true)}, []byte{3}},
		{"held peer removed is dropped", []byte{3}, []byte{3}, nil, nil},
		{"no keepalive: nothing to hold", nil, nil, []wgtypes.PeerConfig{peer(3, nil, true)}, nil},
		{"no endpoint: nothing to hold", nil, nil, []wgtypes.PeerConfig{peer(3, &ka, false)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := map[wgtypes.Key]wgtypes.Peer{}
			for _, n := range tt.live {
				live[testKey(n)] = wgtypes.Peer{PublicKey: testKey(n), PersistentKeepaliveInterval: liveKA[n]}
			}
			held := map[wgtypes.Key]time.Duration{}
			for _, n := range tt.held {
				held[testKey(n)] = ka
			}
			out, next := holdKeepalives(self, live, held, tt.desired)
			want := map[wgtypes.Key]time.Duration{}
			for _, n := range tt.wantHeld {
				want[testKey(n)] = ka
			}
			if diff := cmp.Diff(want, next); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
			for i, d := range out {
				_, isHeld := want[d.PublicKey]
				got, wantKA := valueOr(d.PersistentKeepaliveInterval), valueOr(tt.desired[i].PersistentKeepaliveInterval)
				if isHeld {
					wantKA = 0
				}
				if got != wantKA {
					t.Errorf("peer %d: keepalive %v, want %v", i, got, wantKA)
				}
			}
		})
	}
}
