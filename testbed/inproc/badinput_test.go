package inproc_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/cli"
	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/internal/store/storetest"
	"github.com/fabricmesh/fabric/node"
	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/testbed/inproc"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// badInput is one case of the catalogue: what it sends, and the class of
// error it must get: "exit N" for the fabric and fabricd commands, the
// gRPC code's name for a call.
type badInput struct {
	area, name string
	want       string
	do         func(t *testing.T) string
}

// TestBadInputCatalogue sends bad input of every kind to an in-process
// cluster (labCluster): fabric's flags, fabricd's config file, rules
// files, pubapi calls, vpnapi and steward calls, the reeve's local socket
// and pastiche transfers. Each must be refused with its exact error class,
// and change nothing: every peer's store (its fabric.db, dumped), the
// admin dirs and every peer's stored pastiche files are the same after the
// case as before it, and the same at the end as at the start.
func TestBadInputCatalogue(t *testing.T) {
	l := newLabCluster(t)
	cat := newCatalogue(t, l)
	cases := cat.cases(t)
	if len(cases) < 60 {
		t.Fatalf("%d cases: the catalogue must keep at least 60", len(cases))
	}
	areas := map[string]int{}
	start := cat.snapshot(t)
	for _, tc := range cases {
		areas[tc.area]++
		t.Run(tc.area+"/"+tc.name, func(t *testing.T) {
			before := cat.snapshot(t)
			got := tc.do(t)
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			// A transfer the sender cuts is dropped by its receiver when
			// the cancellation reaches it, which may be just after the
			// sender's call returned: the state has a moment to settle.
			var diff string
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if diff = cmp.Diff(before, cat.snapshot(t)); diff == "" || time.Now().After(deadline) {
					break
				}
			}
			if diff != "" {
				t.Errorf("the refused input changed the state (-before +after):\n%s", diff)
			}
		})
	}
	time.Sleep(time.Second) // anything a refusal set going in the background
	if diff := cmp.Diff(start, cat.snapshot(t)); diff != "" {
		t.Errorf("the catalogue changed the state (-start +end):\n%s", diff)
	}
	if st := l.coord.Core().Status(); st.State != core.StateCoordinator {
		t.Errorf("the coordinator ended %s (%s)", st.State, st.Failure)
	}
	t.Logf("%d cases by area: %v", len(cases), areas)
}

// catalogue holds the connections and files the cases use.
type catalogue struct {
	l                       *labCluster
	dir                     string // files the cases read
	adminDir, otherAdminDir string
	keyFile, looseKeyFile   string
	adminKey                ed25519.PrivateKey
	adminVPNPubKey          []byte

	admin, bootCoord, bootFresh, bootNode1 pubapipb.PubAPIClient
	unknownAdmin, wrongBootstrap           pubapipb.PubAPIClient
	vpnNode1, vpnFresh                     vpnapipb.VPNAPIClient
	stewardUnsigned, stewardAsPastiche     vpnapipb.StewardClient
	stewardForged                          vpnapipb.StewardClient
	local                                  reevepb.LocalReeveClient
	pasticheNode1ToNode2                   pastichepb.PasticheClient // across hordes
	pasticheNode1ToCoord                   pastichepb.PasticheClient // same horde
	pasticheUnsigned                       pastichepb.PasticheClient
}

func newCatalogue(t *testing.T, l *labCluster) *catalogue {
	c := &catalogue{l: l, dir: t.TempDir(), adminDir: l.c.AdminDir(), keyFile: l.c.KeyFile, adminKey: l.adminSigningKey(t)}
	c.otherAdminDir = filepath.Join(c.dir, "other-admin")
	vpnKey, err := wgtypes.ParseKey(strings.TrimSpace(string(mustRead(t, filepath.Join(c.adminDir, "admin-wg.key")))))
	if err != nil {
		t.Fatal(err)
	}
	vpnPub := vpnKey.PublicKey()
	c.adminVPNPubKey = vpnPub[:]
	c.looseKeyFile = c.file(t, "loose.key", mustRead(t, l.c.KeyFile), 0o644)
	c.file(t, "report.pdf", []byte("%PDF-1.4 a report\n"), 0o600)
	coord, fresh := l.coord.Endpoint.String(), l.fresh.Endpoint.String()
	pin := l.coordPin
	boot := authconn.ClientConfig{BootstrapKey: l.c.BootstrapKey}
	_, stranger, _ := ed25519.GenerateKey(nil)
	c.admin = pubapipb.NewPubAPIClient(dial(t, coord, authconn.ClientConfig{SigningPrivKey: c.adminKey, ServerCertPin: pin}))
	c.bootCoord = pubapipb.NewPubAPIClient(dial(t, coord, boot))
	c.bootFresh = pubapipb.NewPubAPIClient(dial(t, fresh, boot))
	c.bootNode1 = pubapipb.NewPubAPIClient(dial(t, l.node1.Endpoint.String(), boot))
	c.unknownAdmin = pubapipb.NewPubAPIClient(dial(t, coord, authconn.ClientConfig{SigningPrivKey: stranger, ServerCertPin: pin}))
	c.wrongBootstrap = pubapipb.NewPubAPIClient(dial(t, coord, authconn.ClientConfig{BootstrapKey: bytes.Repeat([]byte{7}, 32)}))

	coordVPNIP := l.coord.Core().Status().VPNIP
	viaVPN := grpc.WithContextDialer(l.c.VPN.Dial)
	vpnapiEndpoint := netip.AddrPortFrom(coordVPNIP, node.DefaultVPNAPIPort).String()
	c.vpnNode1 = vpnapipb.NewVPNAPIClient(dial(t, vpnapiEndpoint, authconn.ClientConfig{SigningPrivKey: l.identity(t, l.node1).SigningPrivKey, ServerCertPin: pin}, viaVPN))
	c.vpnFresh = vpnapipb.NewVPNAPIClient(dial(t, vpnapiEndpoint, authconn.ClientConfig{SigningPrivKey: l.identity(t, l.fresh).SigningPrivKey, ServerCertPin: pin}, viaVPN))

	node1Reeve, err := reeve.DialLocal(filepath.Join(l.node1.StateDir, "reeve.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node1Reeve.Close() })
	insecureVPN := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), viaVPN}
	signedAs := func(keyID string, s signedrpc.Signer) []grpc.DialOption {
		return append(append([]grpc.DialOption(nil), insecureVPN...), signedrpc.DialOptions(keyID, s)...)
	}
	conn := func(addr netip.AddrPort, opts ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///"+addr.String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	steward := netip.AddrPortFrom(coordVPNIP, serviceid.StewardPort)
	c.stewardUnsigned = vpnapipb.NewStewardClient(conn(steward, insecureVPN...))
	c.stewardAsPastiche = vpnapipb.NewStewardClient(conn(steward, signedAs("pastiche@node1", node1Reeve)...))
	c.stewardForged = vpnapipb.NewStewardClient(conn(steward, signedAs("reeve@node1", signedrpc.KeySigner{KeyID: "reeve@node1", PrivKey: stranger})...))

	local, err := grpc.NewClient("unix://"+filepath.Join(l.node1.StateDir, "reeve.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	c.local = reevepb.NewLocalReeveClient(local)

	pastichePort := uint16(serviceid.PastichePort)
	c.pasticheNode1ToNode2 = pastichepb.NewPasticheClient(conn(netip.AddrPortFrom(l.node2.Core().Status().VPNIP, pastichePort), signedAs("pastiche@node1", node1Reeve)...))
	c.pasticheNode1ToCoord = pastichepb.NewPasticheClient(conn(netip.AddrPortFrom(coordVPNIP, pastichePort), signedAs("pastiche@node1", node1Reeve)...))
	c.pasticheUnsigned = pastichepb.NewPasticheClient(conn(netip.AddrPortFrom(coordVPNIP, pastichePort), insecureVPN...))
	return c
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// file writes a file of the cases and returns its path.
func (c *catalogue) file(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(c.dir, name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// snapshot is everything a refused input must leave as it was: each
// peer's store, each admin dir's files and each peer's stored files.
func (c *catalogue) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, p := range map[string]*inproc.Peer{"coord": c.l.coord, "node1": c.l.node1, "node2": c.l.node2, "fresh": c.l.fresh} {
		for k, v := range storetest.Dump(t, p.Store()) {
			out[name+" store "+k] = v
		}
		hashFiles(t, out, name+" pastiche", filepath.Join(p.StateDir, "pastiche"))
	}
	hashFiles(t, out, "admin dir", c.adminDir)
	hashFiles(t, out, "other admin dir", c.otherAdminDir)
	return out
}

// hashFiles adds the SHA-256 of every file under dir to out.
func hashFiles(t *testing.T, out map[string]string, label, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case os.IsNotExist(err):
			return filepath.SkipDir
		case err != nil:
			return err
		case d.IsDir():
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		out[label+" "+strings.TrimPrefix(path, dir)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fabric runs the CLI and returns "exit N".
func (c *catalogue) fabric(args ...string) func(t *testing.T) string {
	return func(t *testing.T) string {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		code := cli.Run(ctx, args, &out, &out)
		t.Logf("fabric %s: exit %d\n%s", strings.Join(args, " "), code, out.String())
		return fmt.Sprintf("exit %d", code)
	}
}

// fabricd runs fabricd with a config file of content, on fresh's state dir
// and endpoint, and returns "exit N".
func (c *catalogue) fabricd(content string, args ...string) func(t *testing.T) string {
	return func(t *testing.T) string {
		path := c.file(t, "fabricd.yaml", []byte(content), 0o600)
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		code := node.Main(ctx, append([]string{"--config", path}, args...), &out, &out)
		t.Logf("fabricd --config (%q) %s: exit %d\n%s", content, strings.Join(args, " "), code, out.String())
		return fmt.Sprintf("exit %d", code)
	}
}

// call runs a gRPC call and returns its code's name.
func call(fn func(ctx context.Context) error) func(t *testing.T) string {
	return func(t *testing.T) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := fn(ctx)
		t.Logf("%v", err)
		return status.Code(err).String()
	}
}

// activateRequest is a request to make fresh a coordinator, with one
// thing wrong (modify), proven by a fresh admin key over the pin of
// fresh's certificate.
func (c *catalogue) activateRequest(t *testing.T, modify func(*pubapipb.ActivateAsCoordinatorRequest)) *pubapipb.ActivateAsCoordinatorRequest {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	vpnPub := bytes.Repeat([]byte{9}, 32)
	req := &pubapipb.ActivateAsCoordinatorRequest{
		VpnCidr: "203.0.113.0/24", AdminSigningPubKey: pub, AdminVpnPubKey: vpnPub, AdminName: "admin",
		AdminProof: ed25519.Sign(priv, core.ActivationProofMessage(c.l.identity(t, c.l.fresh).TLSCertPin, vpnPub)),
	}
	modify(req)
	return req
}

// activateFresh sends an activation of fresh with one thing wrong.
func (c *catalogue) activateFresh(modify func(*pubapipb.ActivateAsCoordinatorRequest)) func(t *testing.T) string {
	return func(t *testing.T) string {
		req := c.activateRequest(t, modify)
		return call(func(ctx context.Context) error {
			stream, err := c.bootFresh.ActivateAsCoordinator(ctx, req)
			if err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					return err
				}
			}
		})(t)
	}
}

// activateAsNode sends fresh (or the coordinator) a node activation with
// one thing wrong.
func (c *catalogue) activateAsNode(to pubapipb.PubAPIClient, modify func(*pubapipb.ActivateAsNodeRequest)) func(t *testing.T) string {
	key := bytes.Repeat([]byte{3}, 32)
	req := &pubapipb.ActivateAsNodeRequest{
		ClusterId: "7a03e15ba6732618", VpnCidr: "203.0.113.0/24", NodeVpnIp: "203.0.113.20", CoordinatorVpnIp: "203.0.113.1",
		CoordinatorVpnPubKey: key, CoordinatorWgEndpoint: "198.51.100.1:51820", CoordinatorVpnapiEndpoint: "203.0.113.1:7444",
		CoordinatorTlsPin: key, CoordinatorName: "other", CoordinatorSigningPubKey: key,
	}
	modify(req)
	return call(func(ctx context.Context) error {
		_, err := to.ActivateAsNode(ctx, req)
		return err
	})
}

// addNodes asks the coordinator, as the admin, to add endpoints.
func (c *catalogue) addNodes(client pubapipb.PubAPIClient, endpoints []string) func(t *testing.T) string {
	return call(func(ctx context.Context) error {
		stream, err := client.ActivateAdditionalNodes(ctx, &pubapipb.ActivateAdditionalNodesRequest{NodePublicEndpoints: endpoints})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				return err
			}
		}
	})
}

// pasticheSend streams msgs to the coordinator's PasticheSend.
func (c *catalogue) pasticheSend(msgs ...*pubapipb.PasticheSendRequest) func(t *testing.T) string {
	return call(func(ctx context.Context) error {
		stream, err := c.admin.PasticheSend(ctx)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if err := stream.Send(m); err != nil {
				break
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	})
}

func sendHeader(from, to, name string, size int64) *pubapipb.PasticheSendRequest {
	return &pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Header{Header: &pubapipb.PasticheSendHeader{From: from, To: to, Name: name, Size: size}}}
}

func sendChunk(s string) *pubapipb.PasticheSendRequest {
	return &pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Chunk{Chunk: []byte(s)}}
}

// put streams a file to a pastiche endpoint.
func put(client pastichepb.PasticheClient, header *pastichepb.FileHeader, data string) func(t *testing.T) string {
	return call(func(ctx context.Context) error {
		stream, err := client.Put(ctx)
		if err != nil {
			return err
		}
		for _, m := range []*pastichepb.PutRequest{
			{Msg: &pastichepb.PutRequest_Header{Header: header}},
			{Msg: &pastichepb.PutRequest_Chunk{Chunk: []byte(data)}},
		} {
			if err := stream.Send(m); err != nil {
				break
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	})
}

// activateWithRules writes a rules file and returns the fabric activate
// of fresh that reads it.
func (c *catalogue) activateWithRules(t *testing.T, name, content string) []string {
	t.Helper()
	return []string{"activate", "--coordinator", c.l.fresh.Endpoint.String(), "--bootstrap-key-file", c.keyFile,
		"--admin-dir", c.otherAdminDir, "--rules", c.file(t, name, []byte(content), 0o600)}
}
