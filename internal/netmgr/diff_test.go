package netmgr

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// testKey returns a distinct public key per n (diffPeers never checks that
// keys are on the curve).
func testKey(n byte) wgtypes.Key { return wgtypes.Key{31: n} }

func ipNets(t testing.TB, cidrs ...string) []net.IPNet {
	t.Helper()
	var out []net.IPNet
	for _, c := range cidrs {
		ip, n, err := net.ParseCIDR(c)
		if err != nil {
			t.Fatalf("parsing %q: %v", c, err)
		}
		n.IP = ip // keep host bits, as callers may
		out = append(out, *n)
	}
	return out
}

func udpAddr(t testing.TB, s string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	return a
}

func ptr[T any](v T) *T { return &v }

func TestDiffPeers(t *testing.T) {
	psk := wgtypes.Key{0: 9}
	livePeer := func(n byte, endpoint string, keepalive time.Duration, cidrs ...string) wgtypes.Peer {
		p := wgtypes.Peer{PublicKey: testKey(n), PersistentKeepaliveInterval: keepalive, AllowedIPs: ipNets(t, cidrs...)}
		if endpoint != "" {
			p.Endpoint = udpAddr(t, endpoint)
		}
		return p
	}
	tests := []struct {
		name    string
		live    []wgtypes.Peer
		desired []wgtypes.PeerConfig
		want    []wgtypes.PeerConfig
	}{
		{name: "both empty"},
		{
			name: "add to empty device",
			desired: []wgtypes.PeerConfig{
				{PublicKey: testKey(1), Endpoint: udpAddr(t, "198.51.100.1:51820"), AllowedIPs: ipNets(t, "203.0.113.1/32")},
			},
			want: []wgtypes.PeerConfig{
				{PublicKey: testKey(1), Endpoint: udpAddr(t, "198.51.100.1:51820"), PersistentKeepaliveInterval: ptr(time.Duration(0)),
					ReplaceAllowedIPs: true, AllowedIPs: ipNets(t, "203.0.113.1/32")},
			},
		},
		{
			name: "add states a zero keepalive, drops a zero preshared key",
			desired: []wgtypes.PeerConfig{
				{PublicKey: testKey(1), PersistentKeepaliveInterval: ptr(time.Duration(0)), PresharedKey: &wgtypes.Key{}},
			},
			want: []wgtypes.PeerConfig{{PublicKey: testKey(1), PersistentKeepaliveInterval: ptr(time.Duration(0)), ReplaceAllowedIPs: true}},
		},
		{
			name: "remove all, sorted by key",
			live: []wgtypes.Peer{livePeer(3, "", 0), livePeer(1, "", 0), livePeer(2, "", 0)},
			want: []wgtypes.PeerConfig{
				{PublicKey: testKey(1), Remove: true},
				{PublicKey: testKey(2), Remove: true},
				{PublicKey: testKey(3), Remove: true},
			},
		},
		{
			name: "unchanged peers produce nothing",
			live: []wgtypes.Peer{
				livePeer(1, "198.51.100.1:51820", 25*time.Second, "203.0.113.1/32", "203.0.113.128/25"),
				livePeer(2, "198.51.100.2:51820", 0, "203.0.113.2/32"),
			},
			desired: []wgtypes.PeerConfig{
				// Allowed IPs in another order and with host bits set are the same set.
				{PublicKey: testKey(1), Endpoint: udpAddr(t, "198.51.100.1:51820"), PersistentKeepaliveInterval: ptr(25 * time.Second),
					AllowedIPs: ipNets(t, "203.0.113.129/25", "203.0.113.1/32")},
				{PublicKey: testKey(2), Endpoint: udpAddr(t, "198.51.100.2:51820"), AllowedIPs: ipNets(t, "203.0.113.2/32")},
			},
		},
		{
			name:    "nil endpoint keeps the learned one",
			live:    []wgtypes.Peer{livePeer(1, "198.51.100.7:40000", 0, "203.0.113.1/32")},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), AllowedIPs: ipNets(t, "203.0.113.1/32")}},
		},
		{
			name:    "ipv4-mapped endpoint equals ipv4 endpoint",
			live:    []wgtypes.Peer{livePeer(1, "[::ffff:198.51.100.1]:51820", 0)},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), Endpoint: udpAddr(t, "198.51.100.1:51820")}},
		},
		{
			name:    "changed endpoint",
			live:    []wgtypes.Peer{livePeer(1, "198.51.100.1:51820", 0, "203.0.113.1/32")},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), Endpoint: udpAddr(t, "198.51.100.1:51821"), AllowedIPs: ipNets(t, "203.0.113.1/32")}},
			want:    []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, Endpoint: udpAddr(t, "198.51.100.1:51821")}},
		},
		{
			name:    "changed allowed ips",
			live:    []wgtypes.Peer{livePeer(1, "198.51.100.1:51820", 0, "203.0.113.1/32")},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), AllowedIPs: ipNets(t, "203.0.113.1/32", "203.0.113.100/32")}},
			want: []wgtypes.PeerConfig{
				{PublicKey: testKey(1), UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: ipNets(t, "203.0.113.1/32", "203.0.113.100/32")},
			},
		},
		{
			name:    "allowed ips cleared",
			live:    []wgtypes.Peer{livePeer(1, "", 0, "203.0.113.1/32")},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1)}},
			want:    []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, ReplaceAllowedIPs: true}},
		},
		{
			name:    "keepalive set",
			live:    []wgtypes.Peer{livePeer(1, "", 0)},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), PersistentKeepaliveInterval: ptr(25 * time.Second)}},
			want:    []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, PersistentKeepaliveInterval: ptr(25 * time.Second)}},
		},
		{
			name:    "nil keepalive clears it",
			live:    []wgtypes.Peer{livePeer(1, "", 25*time.Second)},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1)}},
			want:    []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true, PersistentKeepaliveInterval: ptr(time.Duration(0))}},
		},
		{
			name:    "preshared key set and cleared",
			live:    []wgtypes.Peer{{PublicKey: testKey(1)}, {PublicKey: testKey(2), PresharedKey: psk}},
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), PresharedKey: &psk}, {PublicKey: testKey(2)}},
			want: []wgtypes.PeerConfig{
				{PublicKey: testKey(1), UpdateOnly: true, PresharedKey: &psk},
				{PublicKey: testKey(2), UpdateOnly: true, PresharedKey: &wgtypes.Key{}},
			},
		},
		{
			name: "mixed: removals first, then desired order",
			live: []wgtypes.Peer{
				livePeer(1, "198.51.100.1:51820", 0, "203.0.113.1/32"),
				livePeer(2, "198.51.100.2:51820", 0, "203.0.113.2/32"),
				livePeer(3, "198.51.100.3:51820", 0, "203.0.113.3/32"),
			},
			desired: []wgtypes.PeerConfig{
				{PublicKey: testKey(4), Endpoint: udpAddr(t, "198.51.100.4:51820"), AllowedIPs: ipNets(t, "203.0.113.4/32")},
				{PublicKey: testKey(3), Endpoint: udpAddr(t, "198.51.100.3:51820"), AllowedIPs: ipNets(t, "203.0.113.3/32", "203.0.113.33/32")},
				{PublicKey: testKey(1), Endpoint: udpAddr(t, "198.51.100.1:51820"), AllowedIPs: ipNets(t, "203.0.113.1/32")},
			},
			want: []wgtypes.PeerConfig{
				{PublicKey: testKey(2), Remove: true},
				{PublicKey: testKey(4), Endpoint: udpAddr(t, "198.51.100.4:51820"), PersistentKeepaliveInterval: ptr(time.Duration(0)),
					ReplaceAllowedIPs: true, AllowedIPs: ipNets(t, "203.0.113.4/32")},
				{PublicKey: testKey(3), UpdateOnly: true, ReplaceAllowedIPs: true, AllowedIPs: ipNets(t, "203.0.113.3/32", "203.0.113.33/32")},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := diffPeers(tt.live, tt.desired)
			if err != nil {
				t.Fatalf("diffPeers: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diffPeers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiffPeersRejectsBadDesired(t *testing.T) {
	tests := []struct {
		name    string
		desired []wgtypes.PeerConfig
		wantErr string
	}{
		{
			name:    "duplicate key",
			desired: []wgtypes.PeerConfig{{PublicKey: testKey(1)}, {PublicKey: testKey(2)}, {PublicKey: testKey(1)}},
			wantErr: "duplicate desired peer " + testKey(1).String(),
		},
		{name: "zero key", desired: []wgtypes.PeerConfig{{}}, wantErr: "zero public key"},
		{name: "remove flag", desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), Remove: true}}, wantErr: "Remove or UpdateOnly"},
		{name: "update-only flag", desired: []wgtypes.PeerConfig{{PublicKey: testKey(1), UpdateOnly: true}}, wantErr: "Remove or UpdateOnly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := diffPeers(nil, tt.desired)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("diffPeers = %v, %v; want error containing %q", got, err, tt.wantErr)
			}
		})
	}
}
