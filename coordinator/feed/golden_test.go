package feed_test

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/coordinator/feed"
	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/google/go-cmp/cmp"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// scene is a small cluster driven step by step: a coordinator "co" in
// horde sharks and nodes named by the steps, with pastiche on each.
type scene struct {
	t    *testing.T
	reg  *registry.Registry
	feed *feed.Feed
	ips  map[string]netip.Addr
	next int
	out  strings.Builder
}

func newScene(t *testing.T, capacity int) *scene {
	t.Helper()
	reg, err := registry.Open(store.NewMem(), registry.Options{LogCapacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	s := &scene{t: t, reg: reg, ips: map[string]netip.Addr{}}
	peers, err := reg.Init(records.Cluster{ID: "c1", VPNCIDR: netip.MustParsePrefix("203.0.113.0/24")},
		records.Peer{Name: "co", Horde: "sharks", PublicEndpoint: "192.0.2.1:7443", WGEndpoint: "192.0.2.1:51820",
			WGPubKey: s.key("co wg"), SigningPubKey: s.key("co signing")},
		[]records.Peer{{Name: "admin", WGPubKey: s.key("admin wg"), SigningPubKey: s.key("admin signing")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.ips["co"] = peers[0].VPNIP
	if s.feed, err = feed.New(reg, rules.DefaultRules(), feed.Options{LogCapacity: capacity}); err != nil {
		t.Fatal(err)
	}
	s.register("co")
	return s
}

func (s *scene) key(what string) []byte {
	k := sha256.Sum256([]byte(what))
	return k[:]
}

func (s *scene) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

// join activates node name in horde, registers it and its pastiche.
func (s *scene) join(name, horde string) {
	s.t.Helper()
	s.next++
	ep := fmt.Sprintf("192.0.2.%d:7443", 10+s.next)
	p, err := s.reg.Reserve(ep, name, s.key(name+" wg"), s.key(name+" signing"), false)
	s.must(err)
	_, err = s.reg.Activate(p.VPNIP, records.Activated{Name: name, Horde: horde, WGEndpoint: fmt.Sprintf("192.0.2.%d:51820", 10+s.next),
		WGPubKey: s.key(name + " wg"), SigningPubKey: s.key(name + " signing")})
	s.must(err)
	s.ips[name] = p.VPNIP
	s.register(name)
}

func (s *scene) register(name string) {
	s.t.Helper()
	ip := s.ips[name]
	_, err := s.reg.SetRegistration(ip, s.key(name+" reeve"), "")
	s.must(err)
	_, err = s.reg.SetServices(ip, records.Services{
		Endpoints: []records.ServiceEndpoint{{Service: "pastiche", Port: 7450}},
		Clients:   []records.ServiceClient{{Service: "pastiche", PubKey: s.key(name + " pastiche")}},
	})
	s.must(err)
}

// step writes what changes and the answer of every node given since the
// revision before it.
func (s *scene) step(what string, change func()) {
	s.t.Helper()
	before := s.reg.Revision()
	change()
	fmt.Fprintf(&s.out, "== %s (revisions %d..%d)\n", what, before+1, s.reg.Revision())
	for _, name := range []string{"co", "n1", "n2", "n3", "n4"} {
		ip, ok := s.ips[name]
		if !ok {
			continue
		}
		u, err := s.feed.Answer(ip, before)
		s.must(err)
		fmt.Fprintf(&s.out, "%s since %d: %s\n", name, before, render(u))
	}
}

// answer writes the answer of node name given since rev.
func (s *scene) answer(name string, since uint64) {
	s.t.Helper()
	u, err := s.feed.Answer(s.ips[name], since)
	s.must(err)
	fmt.Fprintf(&s.out, "== %s since %d\n%s since %d: %s\n", name, since, name, since, render(u))
}

// render writes an update without keys: peers, removals, the view change
// and the users.
func render(u update.Update) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v at %d", u.Kind, u.Revision)
	for _, p := range u.Peers {
		fmt.Fprintf(&b, "\n  peer %s %s %s %s %s", p.Name, p.Role, p.State, p.VPNIP, p.WGEndpoint)
	}
	for _, ip := range u.RemovedPeers {
		fmt.Fprintf(&b, "\n  peer gone %s", ip)
	}
	switch u.View.Kind {
	case update.ViewFull:
		fmt.Fprintf(&b, "\n  view full (%d whitelist, %d endpoints, %d catalog)", len(u.View.Full.Whitelist), len(u.View.Full.Endpoints), len(u.View.Full.Catalog))
		for _, e := range u.View.Full.Whitelist {
			fmt.Fprintf(&b, "\n    whitelist %s <- %s", e.Endpoint, e.Client)
		}
		for _, e := range u.View.Full.Endpoints {
			fmt.Fprintf(&b, "\n    endpoint %s -> %s at %s", e.Client, e.Endpoint, e.Address)
		}
		for _, e := range u.View.Full.Catalog {
			fmt.Fprintf(&b, "\n    catalog %s: %s", e.Client, e.Service)
		}
	case update.ViewDelta:
		b.WriteString("\n  view delta")
		for _, sl := range u.View.Slices {
			fmt.Fprintf(&b, "\n    slice %s", sl.Node)
			if sl.Empty() {
				b.WriteString(" (empty: drop it)")
			}
			for _, e := range sl.Whitelist {
				fmt.Fprintf(&b, "\n      whitelist %s <- %s", e.Endpoint, e.Client)
			}
			for _, e := range sl.Endpoints {
				fmt.Fprintf(&b, "\n      endpoint %s -> %s at %s", e.Client, e.Endpoint, e.Address)
			}
		}
	}
	if u.HasSSHUsers {
		var names []string
		for _, usr := range u.SSHUsers {
			names = append(names, usr.Name)
		}
		fmt.Fprintf(&b, "\n  ssh users [%s]", strings.Join(names, " "))
	}
	return b.String()
}

// TestDeltasGolden: the answers of every node to joins, removals, endpoint
// and horde changes, SSH users, and to nodes behind the log or ahead of
// it, as golden files (regenerate with -update).
func TestDeltasGolden(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		run      func(s *scene)
	}{
		{"join", 1000, func(s *scene) {
			s.join("n1", "sharks")
			s.join("n3", "jets")
			s.step("n2 joins sharks", func() { s.join("n2", "sharks") })
			s.step("n4 joins jets", func() { s.join("n4", "jets") })
		}},
		{"remove", 1000, func(s *scene) {
			s.join("n1", "sharks")
			s.join("n2", "sharks")
			s.join("n3", "jets")
			s.step("n2 is removed", func() {
				_, err := s.reg.Remove(s.ips["n2"])
				s.must(err)
			})
			s.step("a failed row is removed", func() {
				p, err := s.reg.Fail("192.0.2.99:7443", "typo")
				s.must(err)
				_, err = s.reg.Remove(p.VPNIP)
				s.must(err)
			})
		}},
		{"endpoint", 1000, func(s *scene) {
			s.join("n1", "sharks")
			s.join("n2", "jets")
			s.step("n1's WireGuard port changes", func() { s.must(s.reg.SetWGEndpoint(s.ips["n1"], "192.0.2.11:51999")) })
		}},
		{"horde change", 1000, func(s *scene) {
			s.join("n1", "sharks")
			s.join("n2", "sharks")
			s.join("n3", "jets")
			s.step("n2 comes back in jets after losing its state", func() {
				p, err := s.reg.Reserve("192.0.2.12:7443", "n2", s.key("n2 wg 2"), s.key("n2 signing 2"), true)
				s.must(err)
				_, err = s.reg.Activate(p.VPNIP, records.Activated{Name: "n2", Horde: "jets", WGEndpoint: "192.0.2.12:51820",
					WGPubKey: s.key("n2 wg 2"), SigningPubKey: s.key("n2 signing 2")})
				s.must(err)
			})
		}},
		{"nothing for the node", 1000, func(s *scene) {
			s.join("n1", "sharks")
			s.join("n3", "jets")
			s.step("n3's registration fails", func() {
				_, err := s.reg.SetRegistration(s.ips["n3"], nil, "the reeve did not answer")
				s.must(err)
			})
			s.step("n1 comes online", func() { s.must(s.reg.SetLiveness(s.ips["n1"], true, testTime(), testTime(), "co")) })
		}},
		{"users", 1000, func(s *scene) {
			s.join("n1", "sharks")
			s.step("alice is added", func() {
				_, _, _, err := s.reg.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) {
					return []records.SSHUser{{Name: "alice", Keys: []string{"ssh-ed25519 AAAA alice"}}}, nil
				})
				s.must(err)
			})
		}},
		{"full snapshots", 4, func(s *scene) {
			s.join("n1", "sharks")
			s.join("n2", "sharks")
			s.answer("n1", 0)                  // unknown: full
			s.answer("n1", s.reg.Revision()+7) // ahead: full
			s.answer("n1", 2)                  // compacted away: full
			s.answer("n1", s.reg.Revision()-1) // in the log: delta
			s.answer("n1", s.reg.Revision())   // current: unchanged
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScene(t, tc.capacity)
			tc.run(s)
			path := filepath.Join("testdata", strings.ReplaceAll(tc.name, " ", "-")+".golden")
			got := s.out.String()
			if *updateGolden {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("answers differ from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}
