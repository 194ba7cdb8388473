package cli

import (
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
)

func TestNotConverged(t *testing.T) {
	peer := func(name, state string, applied uint64) clusterstatus.Peer {
		return clusterstatus.Peer{Name: name, State: state, AppliedRevision: applied, Registered: true, Online: state == "active",
			Endpoints: []clusterstatus.Service{{Service: "pastiche"}}}
	}
	offline := peer("b", "active", 7)
	offline.Online, offline.LastSeen = false, "2026-05-01T10:00:00Z"
	neverSeen := peer("b", "active", 7)
	neverSeen.Online = false
	unregistered := peer("b", "active", 7)
	unregistered.Registered, unregistered.RegistrationError = false, "callback refused"
	bare := peer("b", "active", 7)
	bare.Endpoints = nil
	tests := []struct {
		name  string
		peers []clusterstatus.Peer
		n     int
		svcs  []string
		want  []string // empty: converged
	}{
		{"all applied", []clusterstatus.Peer{peer("a", "active", 7), peer("b", "active", 7)}, 2, nil, nil},
		{"more than n", []clusterstatus.Peer{peer("a", "active", 7), peer("b", "active", 7)}, 1, nil, nil},
		{"one behind", []clusterstatus.Peer{peer("a", "active", 7), peer("b", "active", 5)}, 2, nil, []string{"2 of 2 peers active", "behind: b at 5"}},
		{"too few", []clusterstatus.Peer{peer("a", "active", 7)}, 3, nil, []string{"1 of 3 peers active"}},
		{"failed peer named", []clusterstatus.Peer{peer("a", "active", 7), {Name: "b", State: "failed", LastError: "refused"}}, 2, nil, []string{"not active: failed b (refused)"}},
		{"unregistered peer", []clusterstatus.Peer{peer("a", "active", 7), unregistered}, 2, nil, []string{"not registered: b (callback refused)"}},
		{"service missing", []clusterstatus.Peer{peer("a", "active", 7), bare}, 2, []string{"pastiche"}, []string{"services missing: pastiche@b"}},
		{"service present", []clusterstatus.Peer{peer("a", "active", 7)}, 1, []string{"pastiche"}, nil},
		{"offline peer", []clusterstatus.Peer{peer("a", "active", 7), offline}, 2, nil, []string{"2 of 2 peers active", "offline: b (last seen 2026-05-01T10:00:00Z)"}},
		{"offline peer beyond n", []clusterstatus.Peer{peer("a", "active", 7), offline}, 1, nil, []string{"offline: b"}},
		{"never seen", []clusterstatus.Peer{peer("a", "active", 7), neverSeen}, 2, nil, []string{"offline: b (last seen never)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := notConverged(clusterstatus.Status{Revision: 7, Peers: tt.peers}, want{n: tt.n, services: tt.svcs})
			if (got == "") != (len(tt.want) == 0) {
				t.Fatalf("notConverged = %q, want %v", got, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}
