package inproc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/node"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// The fuzz targets of this file send arbitrary bytes, as the protobuf
// request of any method of a service, to the real servers of an
// in-process cluster (a coordinator, node1 in sharks, node2 in jets, and
// fresh, a peer never activated), over the connections real callers use.
// Every call must end (a watch or an event stream is cut after 300 ms),
// with a gRPC status a handler chose: never Unknown, and Internal only for
// bytes that do not decode as the method's request (gRPC's own refusal).
// After every call the coordinator is still the coordinator and answers.
// The cluster lives as long as the fuzz target (one per fuzzing worker):
// calls change it (they may add SSH users, remove nodes or activate
// fresh), as an attacker's would.

// rawCodec sends and receives messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// fuzzMethod is one method of a service.
type fuzzMethod struct {
	fullName                     string // /pkg.Service/Method
	input                        protoreflect.MessageDescriptor
	clientStreams, serverStreams bool
	endless                      bool // a stream that goes on until the caller ends it
}

// methodsOf lists every method of desc, its request type from the
// protobuf registry. A new method is fuzzed without a change here.
func methodsOf(tb testing.TB, desc grpc.ServiceDesc, endless ...string) []fuzzMethod {
	tb.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(desc.ServiceName))
	if err != nil {
		tb.Fatalf("service %s: %v", desc.ServiceName, err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	method := func(name string) fuzzMethod {
		md := sd.Methods().ByName(protoreflect.Name(name))
		if md == nil {
			tb.Fatalf("service %s has no method %s in its descriptor", desc.ServiceName, name)
		}
		return fuzzMethod{fullName: "/" + desc.ServiceName + "/" + name, input: md.Input(),
			clientStreams: md.IsStreamingClient(), serverStreams: md.IsStreamingServer()}
	}
	var out []fuzzMethod
	for _, m := range desc.Methods {
		out = append(out, method(m.MethodName))
	}
	for _, s := range desc.Streams {
		m := method(s.StreamName)
		for _, e := range endless {
			m.endless = m.endless || e == s.StreamName
		}
		out = append(out, m)
	}
	return out
}

// decodes reports whether data is a valid request of m.
func (m fuzzMethod) decodes(data []byte) bool {
	return proto.Unmarshal(data, dynamicpb.NewMessage(m.input)) == nil
}

// call sends first (and, on a client stream, second) to m on conn and
// reads the answers, and checks the status it ends with.
func (m fuzzMethod) call(t *testing.T, conn *grpc.ClientConn, first, second []byte) {
	t.Helper()
	timeout := 20 * time.Second
	if m.endless {
		timeout = 300 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	if !m.clientStreams && !m.serverStreams {
		var resp []byte
		err = conn.Invoke(ctx, m.fullName, &first, &resp, grpc.ForceCodec(rawCodec{}))
	} else {
		err = m.stream(ctx, conn, first, second)
	}
	code := status.Code(err)
	switch {
	case code == codes.DeadlineExceeded && m.endless:
	case code == codes.DeadlineExceeded:
		t.Fatalf("%s did not end within %s", m.fullName, timeout)
	case code == codes.Unknown:
		t.Fatalf("%s = %v: a status no handler chose (a handler returned a plain error)", m.fullName, err)
	case code == codes.Internal && m.decodes(first) && (!m.clientStreams || m.decodes(second)):
		t.Fatalf("%s = %v on a request that decodes", m.fullName, err)
	}
}

func (m fuzzMethod) stream(ctx context.Context, conn *grpc.ClientConn, first, second []byte) error {
	desc := &grpc.StreamDesc{StreamName: m.fullName, ClientStreams: m.clientStreams, ServerStreams: m.serverStreams}
	s, err := conn.NewStream(ctx, desc, m.fullName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	msgs := [][]byte{first}
	if m.clientStreams {
		msgs = append(msgs, second)
	}
	for _, msg := range msgs {
		if err := s.SendMsg(&msg); err != nil {
			break // the server ended the call: RecvMsg tells how
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for range 1000 {
		var resp []byte
		if err := s.RecvMsg(&resp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	return fmt.Errorf("%s sent more than 1000 answers", m.fullName)
}

// addSeeds adds, for each method, the seeds reqs gives for it (by method
// name) and an empty request, on each connection.
func addSeeds(f *testing.F, methods []fuzzMethod, conns int, reqs map[string][]proto.Message) {
	for i, m := range methods {
		name := m.fullName[strings.LastIndexByte(m.fullName, '/')+1:]
		msgs := append([]proto.Message{nil}, reqs[name]...)
		for _, msg := range msgs {
			var data []byte
			if msg != nil {
				var err error
				if data, err = proto.Marshal(msg); err != nil {
					f.Fatal(err)
				}
			}
			for conn := range conns {
				f.Add(uint8(i), uint8(conn), data, data)
			}
		}
	}
	f.Add(uint8(0), uint8(0), []byte{0xff, 0xff, 0xff}, []byte{0x0a, 0x80})
}

// FuzzPubAPI sends any bytes to every pubapi method: as the admin and with
// the bootstrap key to the coordinator, and with the bootstrap key to node1
// and to fresh.
func FuzzPubAPI(f *testing.F) {
	methods := methodsOf(f, pubapipb.PubAPI_ServiceDesc, "Events")
	fc := newLabCluster(f)
	admin := dial(f, fc.coord.Endpoint.String(), authconn.ClientConfig{SigningPrivKey: fc.adminSigningKey(f), ServerCertPin: fc.coordPin})
	conns := []*grpc.ClientConn{
		admin,
		dial(f, fc.coord.Endpoint.String(), authconn.ClientConfig{BootstrapKey: fc.c.BootstrapKey}),
		dial(f, fc.node1.Endpoint.String(), authconn.ClientConfig{BootstrapKey: fc.c.BootstrapKey}),
		dial(f, fc.fresh.Endpoint.String(), authconn.ClientConfig{BootstrapKey: fc.c.BootstrapKey}),
	}
	key := make([]byte, 32)
	addSeeds(f, methods, len(conns), map[string][]proto.Message{
		"ActivateAsCoordinator": {&pubapipb.ActivateAsCoordinatorRequest{VpnCidr: "203.0.113.0/24", NodePublicEndpoints: []string{fc.fresh.Endpoint.String()},
			AdminSigningPubKey: key, AdminVpnPubKey: key, AdminName: "admin", Rules: "rules: [", UsersName: "u.yaml", Users: "users: []"}},
		"ActivateAsNode": {&pubapipb.ActivateAsNodeRequest{ClusterId: "c1", VpnCidr: "203.0.113.0/24", NodeVpnIp: "203.0.113.9", CoordinatorVpnIp: "203.0.113.1",
			CoordinatorVpnPubKey: key, CoordinatorWgEndpoint: "127.0.0.1:1", CoordinatorVpnapiEndpoint: "203.0.113.1:7444", CoordinatorTlsPin: key, CoordinatorName: "c", CoordinatorSigningPubKey: key}},
		"ActivateAdditionalNodes": {&pubapipb.ActivateAdditionalNodesRequest{NodePublicEndpoints: []string{fc.fresh.Endpoint.String(), "198.51.100.1:7443", "198.51.100.1:7443"}}},
		"PasticheSend": {&pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Header{Header: &pubapipb.PasticheSendHeader{From: "node1", To: "coord", Name: "../x", Size: 3}}},
			&pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Chunk{Chunk: []byte("abc")}}},
		"AddSSHUser":        {&pubapipb.AddSSHUserRequest{Name: "alice", Keys: []string{"ssh-ed25519 AAAA"}}, &pubapipb.AddSSHUserRequest{Name: "root"}},
		"RemoveSSHUser":     {&pubapipb.RemoveSSHUserRequest{Name: "alice"}},
		"RemoveNode":        {&pubapipb.RemoveNodeRequest{Node: "coord"}, &pubapipb.RemoveNodeRequest{Node: "203.0.113.250"}},
		"Leave":             {&pubapipb.LeaveRequest{ClusterId: "c1", NodeVpnIp: "203.0.113.3", Signature: make([]byte, 64)}},
		"Events":            {&pubapipb.EventsRequest{Since: 1, Follow: true}, &pubapipb.EventsRequest{Since: 1 << 62}},
		"AddCoordinator":    {&pubapipb.AddCoordinatorRequest{PublicEndpoint: fc.fresh.Endpoint.String()}},
		"JoinAsCoordinator": {&pubapipb.JoinAsCoordinatorRequest{ClusterId: "c1", VpnIp: "203.0.113.9"}},
	})
	f.Fuzz(func(t *testing.T, method, conn uint8, first, second []byte) {
		methods[int(method)%len(methods)].call(t, conns[int(conn)%len(conns)], first, second)
		fc.check(t, admin)
	})
}

// FuzzVPNAPI sends any bytes to every vpnapi method of the coordinator,
// over the VPN, as node1 (its signing key) and as fresh (a key the
// coordinator does not know).
func FuzzVPNAPI(f *testing.F) {
	methods := methodsOf(f, vpnapipb.VPNAPI_ServiceDesc, "WatchUpdates")
	fc := newLabCluster(f)
	admin := dial(f, fc.coord.Endpoint.String(), authconn.ClientConfig{SigningPrivKey: fc.adminSigningKey(f), ServerCertPin: fc.coordPin})
	vpnapiEndpoint := netip.AddrPortFrom(fc.coord.Core().Status().VPNIP, node.DefaultVPNAPIPort).String()
	viaVPN := grpc.WithContextDialer(fc.c.VPN.Dial)
	conns := []*grpc.ClientConn{
		dial(f, vpnapiEndpoint, authconn.ClientConfig{SigningPrivKey: fc.identity(f, fc.node1).SigningPrivKey, ServerCertPin: fc.coordPin}, viaVPN),
		dial(f, vpnapiEndpoint, authconn.ClientConfig{SigningPrivKey: fc.identity(f, fc.fresh).SigningPrivKey, ServerCertPin: fc.coordPin}, viaVPN),
	}
	// The connection as node1 reaches the handlers: a watch answers.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	watch, err := vpnapipb.NewVPNAPIClient(conns[0]).WatchUpdates(ctx)
	if err == nil {
		err = watch.Send(&vpnapipb.WatchRequest{})
	}
	if err == nil {
		_, err = watch.Recv()
	}
	cancel()
	if err != nil {
		f.Fatalf("node1's watch: %v", err)
	}
	addSeeds(f, methods, len(conns), map[string][]proto.Message{
		"WatchUpdates": {&vpnapipb.WatchRequest{AppliedRevision: 1, WgEndpoint: "127.0.0.1:1", CoordinatorHandshakeAgeMs: -1}, &vpnapipb.WatchRequest{AppliedRevision: 1 << 62, WgEndpoint: "x"}},
		"Register":     {&vpnapipb.RegisterRequest{ReevePubKey: make([]byte, 32)}, &vpnapipb.RegisterRequest{ReevePubKey: []byte{1}}},
	})
	f.Fuzz(func(t *testing.T, method, conn uint8, first, second []byte) {
		methods[int(method)%len(methods)].call(t, conns[int(conn)%len(conns)], first, second)
		fc.check(t, admin)
	})
}

// FuzzReeveLocal sends any bytes to every method of node1's reeve local
// API, on its unix socket, as a local service would.
func FuzzReeveLocal(f *testing.F) {
	methods := methodsOf(f, reevepb.LocalReeve_ServiceDesc)
	fc := newLabCluster(f)
	admin := dial(f, fc.coord.Endpoint.String(), authconn.ClientConfig{SigningPrivKey: fc.adminSigningKey(f), ServerCertPin: fc.coordPin})
	local, err := grpc.NewClient("unix://"+filepath.Join(fc.node1.StateDir, "reeve.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { local.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = reevepb.NewLocalReeveClient(local).Catalog(ctx, &reevepb.CatalogRequest{Client: "pastiche@node1"})
	cancel()
	if err != nil {
		f.Fatalf("node1's reeve socket: %v", err)
	}
	addSeeds(f, methods, 1, map[string][]proto.Message{
		"RegisterEndpoint": {&reevepb.RegisterEndpointRequest{Service: "ledger", Port: 9000}, &reevepb.RegisterEndpointRequest{Service: "Ledger", Port: 70000}},
		"RegisterClient":   {&reevepb.RegisterClientRequest{Service: "billing"}, &reevepb.RegisterClientRequest{Service: "fabric-admin"}},
		"EndpointsUp":      {&reevepb.EndpointsUpRequest{Client: "pastiche@node1", Service: "pastiche"}},
		"Sign":             {&reevepb.SignRequest{Client: "pastiche@node1", Data: []byte("x")}},
		"Lookup":           {&reevepb.LookupRequest{Endpoint: "pastiche@node1", Client: "pastiche@node2"}},
	})
	f.Fuzz(func(t *testing.T, method, _ uint8, first, second []byte) {
		methods[int(method)%len(methods)].call(t, local, first, second)
		fc.check(t, admin)
		if st := fc.node1.Core().Status(); st.State != core.StateNode {
			t.Fatalf("node1 is %s (%s)", st.State, st.Failure)
		}
	})
}
