package fabric_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/testbed/nshost"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestRipstop is seed 000's ten-node test done properly: h1..h5 in horde
// sharks (h1 the coordinator), h6..h10 in jets. Every assertion reads
// state: the cluster status, the reeves' local API, pastiche's answers.
func TestRipstop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f, hosts := newFabric(t, 10, func(i int) nshost.PeerOptions {
		if i < 5 {
			return nshost.PeerOptions{Horde: "sharks"}
		}
		return nshost.PeerOptions{Horde: "jets"}
	})
	activate(t, f, hosts[0], hosts[1:])
	if out, err := f.Watch(ctx, 10, time.Minute, serviceid.Pastiche); err != nil {
		t.Fatalf("fabric watch --services pastiche: %v\n%s", err, out)
	}
	st := status(t, f)
	c := newRipstop(t, f, hosts, st)

	t.Run("status: registry and steward on the coordinator, reeve and pastiche everywhere", func(t *testing.T) {
		for _, p := range st.Peers {
			// The registry serves registration on vpnapi, and calls the
			// reeves back as a client.
			want := []string{"pastiche", "reeve"}
			if p.Role == "coordinator" {
				want = []string{"pastiche", "reeve", "steward"}
			}
			if got := serviceNames(p.Endpoints); !slices.Equal(got, want) {
				t.Errorf("%s endpoints %v, want %v", p.Name, got, want)
			}
			for _, e := range p.Endpoints {
				if e.ID != e.Service+"@"+p.Name || !strings.HasPrefix(e.Address, p.VPNIP+":") {
					t.Errorf("%s endpoint %+v is not %s@%s on %s", p.Name, e, e.Service, p.Name, p.VPNIP)
				}
			}
			want = []string{"pastiche", "reeve"}
			if p.Role == "coordinator" {
				want = []string{"fabric-admin", "pastiche", "reeve", "registry"}
			}
			if got := serviceNames(p.Clients); !slices.Equal(got, want) {
				t.Errorf("%s clients %v, want %v", p.Name, got, want)
			}
		}
	})

	t.Run("all registered through the callback, every reeve applied the steward's view", func(t *testing.T) {
		for _, p := range st.Peers {
			if !p.Registered || p.RegisteredAt == "" || p.RegistrationError != "" || p.AppliedRevision != st.Revision {
				t.Errorf("%s: registered %v at %q (%q), applied revision %d of %d",
					p.Name, p.Registered, p.RegisteredAt, p.RegistrationError, p.AppliedRevision, st.Revision)
			}
		}
	})

	t.Run("catalog and endpoints up of every pastiche", func(t *testing.T) {
		for _, h := range hosts {
			r := c.reeve(h)
			id := serviceid.ID(serviceid.Pastiche, h.Name())
			catalog, err := r.Catalog(ctx, id)
			if err != nil {
				t.Fatalf("%s: Catalog: %v", h.Name(), err)
			}
			if !slices.Equal(catalog, []string{serviceid.Pastiche}) {
				t.Errorf("%s: Catalog(%s) = %v, want [pastiche]", h.Name(), id, catalog)
			}
			up, err := r.EndpointsUp(ctx, id, serviceid.Pastiche)
			if err != nil {
				t.Fatalf("%s: EndpointsUp: %v", h.Name(), err)
			}
			if diff := cmp.Diff(c.otherPastiches(t, h), up); diff != "" {
				t.Errorf("%s: EndpointsUp(pastiche) (-want +got):\n%s", h.Name(), diff)
			}
		}
	})

	// The admin host joins the VPN to probe the endpoints directly.
	if err := f.AdminVPNUp(ctx); err != nil {
		t.Fatal(err)
	}
	h2, h3, h7 := hosts[1], hosts[2], hosts[6]
	data := randomBytes(t, 3<<20+123) // several chunks and a partial one

	t.Run("sharks to sharks arrives intact", func(t *testing.T) {
		sum := c.send(t, h2, h3, "shared.bin", data)
		if want := sha256.Sum256(data); sum != hex.EncodeToString(want[:]) {
			t.Fatalf("target verified %s, want %x", sum, want)
		}
		req := &pastichepb.StatRequest{Name: "shared.bin"}
		c.learnFloor(t, h2, h3)
		p := c.signed(t, h2, h3, pastichepb.Pastiche_Stat_FullMethodName, req)
		got, err := c.pastiche(t, h3).Stat(p.ctx, req, p.authority())
		if err != nil {
			t.Fatalf("Stat on h3 as pastiche@h2: %v", err)
		}
		want := &pastichepb.StatResponse{Name: "shared.bin", Size: int64(len(data)), Sha256: sha(data)}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("Stat (-want +got):\n%s", diff)
		}
		if stored, err := os.ReadFile(filepath.Join(h3.Dir(), "state", "pastiche", "shared.bin")); err != nil || !bytes.Equal(stored, data) {
			t.Errorf("h3 stored %d bytes (%v), want the %d sent", len(stored), err, len(data))
		}
	})

	t.Run("sharks to jets is refused and nothing is written", func(t *testing.T) {
		out, err := c.trySend(t, h2, h7, "crossing.bin", data)
		t.Logf("fabric pastiche send --from h2 --to h7: %v\n%s", err, out)
		if err == nil || !strings.Contains(out, "permission denied: h2 (horde sharks) and h7 (horde jets) are in different hordes") {
			t.Errorf("send h2 -> h7: err %v, output %q; want a permission denial that names the hordes", err, out)
		}
		if entries, _ := os.ReadDir(filepath.Join(h7.Dir(), "state", "pastiche")); len(entries) != 0 {
			t.Errorf("h7's pastiche directory holds %v after a refused send", entries)
		}
	})

	t.Run("refused calls", func(t *testing.T) {
		stat := &pastichepb.StatRequest{Name: "shared.bin"}
		method := pastichepb.Pastiche_Stat_FullMethodName
		replayed := c.signed(t, h2, h3, method, stat)
		if _, err := c.pastiche(t, h3).Stat(replayed.ctx, stat, replayed.authority()); err != nil {
			t.Fatalf("first use of a signed call: %v", err)
		}
		tampered := c.signed(t, h2, h3, method, &pastichepb.StatRequest{Name: "other.bin"})
		h3Addr := c.pasticheAddr(t, h3)
		for _, tt := range []struct {
			test  string
			probe probe
			code  codes.Code
			msg   string
		}{
			{"unsigned", probe{ctx: ctx, host: h3Addr}, codes.Unauthenticated, "missing signature"},
			{"unknown key", c.signedWith(t, "pastiche@h42", newSigner(t), h3Addr, method, stat), codes.Unauthenticated, `keyId "pastiche@h42"`},
			{"known key, wrong private key", c.signedWith(t, "pastiche@h2", newSigner(t), h3Addr, method, stat), codes.Unauthenticated, "bad signature"},
			{"replayed", replayed, codes.Unauthenticated, "replay"},
			{"tampered digest", tampered, codes.Unauthenticated, "digest"},
			{"client of the other horde", c.signed(t, h7, h3, method, stat), codes.Unauthenticated, `keyId "pastiche@h7"`},
			{"signed for another endpoint", c.signed(t, h2, hosts[3], method, stat), codes.Unauthenticated,
				"signed for another endpoint: it is addressed to " + c.pasticheAddr(t, hosts[3]) + ", this endpoint is " + h3Addr},
			{"whitelisted client of another service", c.signedAs(t, hosts[0], "fabric-admin@h1", h3, method, stat), codes.PermissionDenied,
				"Stat of pastiche@h3 is for pastiche clients only"},
		} {
			t.Run(tt.test, func(t *testing.T) {
				// A probe signed for another endpoint is sent as it was
				// signed, as a replay would be.
				_, err := c.pastiche(t, h3).Stat(tt.probe.ctx, stat, tt.probe.authority())
				if s := grpcstatus.Convert(err); err == nil || s.Code() != tt.code || !strings.Contains(s.Message(), tt.msg) {
					t.Errorf("Stat: %v; want %v with %q", err, tt.code, tt.msg)
				}
			})
		}
	})

	t.Run("a Put replayed by its target is refused by other endpoints and after a restart", func(t *testing.T) {
		c.testReplayedPut(t, hosts[0], h2, h3, hosts[3])
	})

	t.Run("node restart keeps reeve keys and registration", func(t *testing.T) {
		h4, h5 := hosts[3], hosts[4]
		before := peerByName(t, status(t, f), "h4")
		key := c.pastichePubKey(t, h5, h4)
		if err := f.Daemon(h4).Kill(); err != nil { // a crash
			t.Fatal(err)
		}
		if err := f.StartFabricd(ctx, h4); err != nil {
			t.Fatal(err)
		}
		if out, err := f.Watch(ctx, 10, time.Minute, serviceid.Pastiche); err != nil {
			t.Fatalf("fabric watch after the restart: %v\n%s", err, out)
		}
		after := peerByName(t, status(t, f), "h4")
		if diff := cmp.Diff(before, after, ignoreProgress); diff != "" {
			t.Errorf("h4 changed across its restart (registeredAt: a new registration) (-before +after):\n%s", diff)
		}
		if got := c.pastichePubKey(t, h5, h4); !got.Equal(key) {
			t.Error("h4's pastiche key changed across its restart")
		}
		c.send(t, h4, h5, "after-restart.bin", data[:1000])
	})
}

// ripstop holds what the probes of TestRipstop need.
type ripstop struct {
	f      *nshost.Fabric
	hosts  []*nshost.Host
	st     clusterstatus.Status
	reeves map[*nshost.Host]*reeve.Client
	// dates keeps the probes' signatures distinct, as signedrpc's do.
	dates *httpsig.DateSource
	// floors are what endpoints said of the dates they accept (by
	// host:port): an endpoint that started less than the skew window ago
	// refuses calls dated with the clock, and the probes date theirs
	// after its floor, as signedrpc's clients do.
	floors map[string]probeFloor
}

// probeFloor: an endpoint accepts dates from earliest on, up to ahead past
// this clock.
type probeFloor struct {
	earliest time.Time
	ahead    time.Duration
}

func newRipstop(t *testing.T, f *nshost.Fabric, hosts []*nshost.Host, st clusterstatus.Status) *ripstop {
	c := &ripstop{f: f, hosts: hosts, st: st, reeves: map[*nshost.Host]*reeve.Client{},
		dates: httpsig.NewDateSource(httpsig.DateSourceConfig{}), floors: map[string]probeFloor{}}
	for _, h := range hosts {
		r, err := reeve.DialLocal(filepath.Join(h.Dir(), "state", "reeve.sock"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		c.reeves[h] = r
	}
	return c
}

// reeve is h's reeve, through its local socket.
func (c *ripstop) reeve(h *nshost.Host) *reeve.Client { return c.reeves[h] }

// otherPastiches are the pastiche endpoints of h's horde but its own.
func (c *ripstop) otherPastiches(t *testing.T, h *nshost.Host) []reeve.Endpoint {
	self := peerByName(t, c.st, h.Name())
	var out []reeve.Endpoint
	for _, p := range c.st.Peers {
		if p.Horde == self.Horde && p.Name != self.Name {
			out = append(out, reeve.Endpoint{
				ID: serviceid.ID(serviceid.Pastiche, p.Name), Service: serviceid.Pastiche,
				Address: netip.AddrPortFrom(netip.MustParseAddr(p.VPNIP), serviceid.PastichePort).String(),
			})
		}
	}
	slices.SortFunc(out, func(a, b reeve.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// pasticheAddr is the address of h's pastiche endpoint.
func (c *ripstop) pasticheAddr(t *testing.T, h *nshost.Host) string {
	t.Helper()
	return netip.AddrPortFrom(netip.MustParseAddr(peerByName(t, c.st, h.Name()).VPNIP), serviceid.PastichePort).String()
}

// pastiche is an unsigned client of h's pastiche from the admin host: the
// probes put the signature headers in the call's metadata themselves.
func (c *ripstop) pastiche(t *testing.T, h *nshost.Host) pastichepb.PasticheClient {
	t.Helper()
	return pastichepb.NewPasticheClient(c.dial(t, h))
}

// dial connects to h's pastiche from the admin host, with opts.
func (c *ripstop) dial(t *testing.T, h *nshost.Host, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+c.pasticheAddr(t, h), append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(c.f.Admin.DialContext)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// probe is a signed call made by hand: its context carries the signature
// headers, and host is the endpoint it was signed for, which it must be
// sent to as its :authority (the signed host header).
type probe struct {
	ctx  context.Context
	host string
}

func (p probe) authority() grpc.CallOption { return grpc.CallAuthority(p.host) }

// signed signs a call of method with req to the pastiche of target, as the
// pastiche client of h, by h's reeve.
func (c *ripstop) signed(t *testing.T, h, target *nshost.Host, method string, req proto.Message) probe {
	return c.signedAs(t, h, serviceid.ID(serviceid.Pastiche, h.Name()), target, method, req)
}

// signedAs signs as client keyID of h's reeve.
func (c *ripstop) signedAs(t *testing.T, h *nshost.Host, keyID string, target *nshost.Host, method string, req proto.Message) probe {
	return c.signedWith(t, keyID, c.signer(h, keyID), c.pasticheAddr(t, target), method, req)
}

// signer signs as client keyID of h's reeve.
func (c *ripstop) signer(h *nshost.Host, keyID string) httpsig.SignFunc {
	r := c.reeve(h)
	return func(data []byte) ([]byte, error) { return r.Sign(context.Background(), keyID, data) }
}

// signedWith signs as keyID with sign for the endpoint at host, as package
// signedrpc does (its documented wire format), so that the probe can
// replay or alter it.
func (c *ripstop) signedWith(t *testing.T, keyID string, sign httpsig.SignFunc, host, method string, req proto.Message) probe {
	t.Helper()
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	now := time.Now()
	date, wait := c.dates.Next(keyID+" "+host+" "+httpsig.RequestTarget("POST", method), httpsig.DigestOfSum(sum), c.clock(host, now))
	if f, ok := c.floors[host]; ok {
		wait = max(wait, date.Sub(now.Add(f.ahead)))
	}
	time.Sleep(wait)
	h, err := httpsig.Sign(keyID, "POST", method, host, date, sum, sign)
	if err != nil {
		t.Fatal(err)
	}
	return probe{ctx: metadata.AppendToOutgoingContext(context.Background(), "date", h.Date, "digest", h.Digest, "signature", h.Signature), host: host}
}

// clock is the date to sign a call to host with at now: now, or the
// endpoint's floor if it is later.
func (c *ripstop) clock(host string, now time.Time) time.Time {
	if f, ok := c.floors[host]; ok && f.earliest.After(now) {
		return f.earliest
	}
	return now
}

// learnFloor asks target's pastiche, with a Stat signed by from's pastiche
// client, which dates it accepts, and waits until it accepts one: an
// endpoint refuses calls dated at or before its start plus the skew, and
// says so in the refusal's trailer (see internal/signedrpc).
func (c *ripstop) learnFloor(t *testing.T, from, target *nshost.Host) {
	t.Helper()
	req := &pastichepb.StatRequest{Name: "no such file"}
	p := c.signed(t, from, target, pastichepb.Pastiche_Stat_FullMethodName, req)
	var trailer metadata.MD
	_, err := c.pastiche(t, target).Stat(p.ctx, req, p.authority(), grpc.Trailer(&trailer))
	if grpcstatus.Code(err) == codes.NotFound {
		return // accepted: its floor is behind
	}
	earliest, err1 := httpsig.ParseDate(strings.Join(trailer.Get("fabric-earliest-date"), ","))
	latest, err2 := httpsig.ParseDate(strings.Join(trailer.Get("fabric-latest-date"), ","))
	if err1 != nil || err2 != nil {
		t.Fatalf("Stat signed with the clock: %v, trailer %v; want NotFound, or a refusal for the date that says which dates are accepted", err, trailer)
	}
	t.Logf("%s: %v; accepted dates %s to %s", p.host, err, httpsig.FormatDate(earliest), httpsig.FormatDate(latest))
	c.floors[p.host] = probeFloor{earliest: earliest, ahead: time.Until(latest)}
	time.Sleep(earliest.Sub(latest))
}

func newSigner(t *testing.T) httpsig.SignFunc {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return func(data []byte) ([]byte, error) { return ed25519.Sign(key, data), nil }
}

// pastichePubKey is the key of target's pastiche client on the whitelist
// of on's pastiche endpoint.
func (c *ripstop) pastichePubKey(t *testing.T, on, target *nshost.Host) ed25519.PublicKey {
	t.Helper()
	key, err := c.reeve(on).Lookup(serviceid.ID(serviceid.Pastiche, on.Name()), serviceid.ID(serviceid.Pastiche, target.Name()))
	if err != nil {
		t.Fatalf("whitelist of pastiche@%s: %v", on.Name(), err)
	}
	return key
}

// send runs `fabric pastiche send` of data as name and returns the SHA-256
// the target verified.
func (c *ripstop) send(t *testing.T, from, to *nshost.Host, name string, data []byte) string {
	t.Helper()
	out, err := c.trySend(t, from, to, name, data)
	if err != nil {
		t.Fatalf("fabric pastiche send %s -> %s: %v\n%s", from.Name(), to.Name(), err, out)
	}
	_, sum, ok := strings.Cut(strings.TrimSpace(out), "sha256 verified by pastiche@"+to.Name()+": ")
	if !ok {
		t.Fatalf("fabric pastiche send printed no verified SHA-256:\n%s", out)
	}
	return sum
}

func (c *ripstop) trySend(t *testing.T, from, to *nshost.Host, name string, data []byte) (string, error) {
	t.Helper()
	path := filepath.Join(c.f.Admin.Dir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return c.f.CLI(context.Background(), "pastiche", "send", "--from", from.Name(), "--to", to.Name(), path, "--admin-dir", c.f.AdminDir)
}

func serviceNames(ss []clusterstatus.Service) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Service)
	}
	slices.Sort(out)
	return out
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
