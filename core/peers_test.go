package core

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testPeerRecord(ip string, state records.State, keyByte byte, wgEndpoint string) records.Peer {
	key := make([]byte, 32)
	key[0] = keyByte
	return records.Peer{Name: "p" + ip, VPNIP: netip.MustParseAddr(ip), WGPubKey: key, State: state, WGEndpoint: wgEndpoint}
}

func TestWGPeers(t *testing.T) {
	self := netip.MustParseAddr("203.0.113.3")
	peers := []records.Peer{
		testPeerRecord("203.0.113.1", records.StateActive, 1, "192.0.2.1:51820"),
		testPeerRecord("203.0.113.2", records.StateActive, 2, ""), // admin: no endpoint
		testPeerRecord("203.0.113.3", records.StateActive, 3, "192.0.2.10:51820"),
		testPeerRecord("203.0.113.4", records.StatePending, 4, ""),
		testPeerRecord("203.0.113.5", records.StateFailed, 5, ""),
		testPeerRecord("fd00::6", records.StateActive, 6, "[2001:db8::6]:51820"),
	}
	type peer struct {
		Key        byte
		Endpoint   string
		AllowedIPs []string
		Replace    bool
		Keepalive  bool
	}
	summary := func(got []wgtypes.PeerConfig) []peer {
		var gotPeers []peer
		for _, p := range got {
			q := peer{Key: p.PublicKey[0], Replace: p.ReplaceAllowedIPs, Keepalive: p.PersistentKeepaliveInterval != nil && *p.PersistentKeepaliveInterval > 0}
			if p.Endpoint != nil {
				q.Endpoint = p.Endpoint.String()
			}
			for _, n := range p.AllowedIPs {
				q.AllowedIPs = append(q.AllowedIPs, n.String())
			}
			gotPeers = append(gotPeers, q)
		}
		return gotPeers
	}
	active := []peer{
		{1, "192.0.2.1:51820", []string{"203.0.113.1/32"}, true, true},
		{2, "", []string{"203.0.113.2/32"}, true, false}, // nowhere to send keepalives
		{6, "[2001:db8::6]:51820", []string{"fd00::6/128"}, true, true},
	}
	for _, tt := range []struct {
		name    string
		pending bool
		want    []peer
	}{
		{"node", false, active},
		// The coordinator also knows the key of a node being activated.
		{"coordinator", true, []peer{active[0], active[1], {4, "", []string{"203.0.113.4/32"}, true, false}, active[2]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wgPeers(peers, self, tt.pending)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summary(got)); diff != "" {
				t.Errorf("wgPeers: every other active peer at its VPN IP only, keepalives to those with an endpoint (-want +got):\n%s", diff)
			}
		})
	}

	bad := []struct {
		name string
		peer records.Peer
		want string
	}{
		{"short key", records.Peer{Name: "x", VPNIP: netip.MustParseAddr("203.0.113.9"), WGPubKey: []byte{1}, State: records.StateActive}, "wireguard public key"},
		{"bad endpoint", testPeerRecord("203.0.113.9", records.StateActive, 9, "host:51820"), "wireguard endpoint"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wgPeers([]records.Peer{tt.peer}, self, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "203.0.113.9") {
				t.Errorf("wgPeers = %v, want an error about the %s naming the peer", err, tt.want)
			}
		})
	}
}

func TestMergePeers(t *testing.T) {
	p := func(ip string, rev uint64) records.Peer {
		return records.Peer{VPNIP: netip.MustParseAddr(ip), Revision: rev}
	}
	held := heldPeers{rev: 3, peers: map[netip.Addr]records.Peer{}}
	for _, q := range []records.Peer{p("203.0.113.1", 1), p("203.0.113.3", 2), p("203.0.113.4", 3)} {
		held.peers[q.VPNIP] = q
	}
	tests := []struct {
		name string
		upd  update.Update
		want []records.Peer
	}{
		{"delta changes and adds", update.Update{Revision: 5, Kind: update.Delta, Peers: []records.Peer{p("203.0.113.5", 5), p("203.0.113.3", 4)}},
			[]records.Peer{p("203.0.113.1", 1), p("203.0.113.3", 4), p("203.0.113.4", 3), p("203.0.113.5", 5)}},
		{"delta removes", update.Update{Revision: 5, Kind: update.Delta, RemovedPeers: []netip.Addr{netip.MustParseAddr("203.0.113.3")}},
			[]records.Peer{p("203.0.113.1", 1), p("203.0.113.4", 3)}},
		{"full replaces", update.Update{Revision: 9, Kind: update.Full, Peers: []records.Peer{p("203.0.113.7", 9), p("203.0.113.1", 8)}},
			[]records.Peer{p("203.0.113.1", 8), p("203.0.113.7", 9)}},
		{"full and empty", update.Update{Revision: 9, Kind: update.Full}, nil},
		{"unchanged", update.Update{Revision: 4, Kind: update.Unchanged}, held.sorted()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := held.merge(tt.upd)
			if diff := cmp.Diff(tt.want, got.sorted(), cmpNetip, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("merge (-want +got):\n%s", diff)
			}
			if got.rev != tt.upd.Revision {
				t.Errorf("merge revision %d, want %d", got.rev, tt.upd.Revision)
			}
		})
	}
	if len(held.peers) != 3 {
		t.Error("merge changed the peers it merged into")
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: time.Millisecond, max: 5 * time.Millisecond}
	var got []time.Duration
	for range 5 {
		got = append(got, b.next())
	}
	b.reset()
	got = append(got, b.next())
	ms := time.Millisecond
	want := []time.Duration{ms, 2 * ms, 4 * ms, 5 * ms, 5 * ms, ms}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backoff delays (-want +got):\n%s", diff)
	}
}

func TestHostNet(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"203.0.113.7", "203.0.113.7/32"},
		{"fd00::7", "fd00::7/128"},
	}
	for _, tt := range tests {
		n := hostNet(netip.MustParseAddr(tt.ip))
		if n.String() != tt.want {
			t.Errorf("hostNet(%s) = %s, want %s", tt.ip, n.String(), tt.want)
		}
	}
}
