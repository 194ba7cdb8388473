package inproc_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/node/pastiche/pastichepb"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
)

// cases is the catalogue. Each case is refused; the test checks the class
// and that nothing changed.
func (c *catalogue) cases(t *testing.T) []badInput {
	coord, node1, fresh := c.l.coord.Endpoint.String(), c.l.node1.Endpoint.String(), c.l.fresh.Endpoint.String()
	admin := []string{"--admin-dir", c.adminDir}
	with := func(args ...string) []string { return append(args, admin...) }
	activateFresh := func(extra ...string) []string {
		return append([]string{"activate", "--coordinator", fresh, "--bootstrap-key-file", c.keyFile, "--admin-dir", c.otherAdminDir}, extra...)
	}
	manyEndpoints := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("198.51.100.1:%d", 1000+i))
		}
		return out
	}
	manyServices := func(n int) string {
		var names []string
		for i := range n {
			names = append(names, fmt.Sprintf("svc%d", i))
		}
		return "services: [" + strings.Join(names, ", ") + "]\nrules: []\n"
	}
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm8TXgBZ4Q7RGq2bN2oLyDL3lTqPxVZ7ZWd0cSm3zTq alice@laptop"
	config := func(lines ...string) string {
		return "state-dir: " + c.l.fresh.StateDir + "\nbootstrap-key-file: " + c.keyFile + "\n" + strings.Join(lines, "\n") + "\n"
	}
	listen := "listen: " + fresh
	cli := func(area, name, want string, args ...string) badInput {
		return badInput{area: area, name: name, want: want, do: c.fabric(args...)}
	}
	return []badInput{
		// fabric's command line: usage errors exit 2 before anything is
		// sent, refusals of the coordinator exit 1.
		cli("cli", "unknown command", "exit 2", "frobnicate"),
		cli("cli", "unknown subcommand", "exit 2", "pastiche", "sned"),
		cli("cli", "unknown users subcommand", "exit 2", "users", "frob"),
		cli("cli", "unknown help topic", "exit 2", "help", "stauts"),
		cli("cli", "unknown completion shell", "exit 2", "completion", "bashh"),
		cli("cli", "unknown flag", "exit 2", with("status", "--colour")...),
		cli("cli", "argument to a command without any", "exit 2", with("status", "now")...),
		cli("cli", "bad output format", "exit 2", with("status", "-o", "yaml")...),
		cli("cli", "negative timeout", "exit 2", with("status", "--timeout", "-1s")...),
		cli("cli", "watch for no peer", "exit 2", with("watch", "--n", "0")...),
		cli("cli", "add-nodes without nodes", "exit 2", with("add-nodes")...),
		cli("cli", "add-nodes with a host name", "exit 2", with("add-nodes", "--nodes", "node1")...),
		cli("cli", "add-nodes with a node twice", "exit 2", with("add-nodes", "--nodes", node1+","+node1)...),
		cli("cli", "add-nodes with the coordinator", "exit 2", with("add-nodes", "--nodes", coord)...),
		cli("cli", "add-nodes inside the VPN (the coordinator refuses)", "exit 2", with("add-nodes", "--nodes", "203.0.113.9:7443")...),
		cli("cli", "activate with a /30", "exit 2", activateFresh("--vpn-cidr", "203.0.113.0/30")...),
		cli("cli", "activate with host bits", "exit 2", activateFresh("--vpn-cidr", "203.0.113.7/24")...),
		cli("cli", "activate with no CIDR", "exit 2", activateFresh("--vpn-cidr", "vpn")...),
		cli("cli", "activate a coordinator without a port", "exit 2", "activate", "--coordinator", "198.51.100.10", "--bootstrap-key-file", c.keyFile, "--admin-dir", c.otherAdminDir),
		cli("cli", "activate with the coordinator as a node", "exit 2", activateFresh("--nodes", fresh)...),
		cli("cli", "activate with a loose key file", "exit 1", "activate", "--coordinator", fresh, "--bootstrap-key-file", c.looseKeyFile, "--admin-dir", c.otherAdminDir),
		cli("cli", "activate with a missing key file", "exit 1", "activate", "--coordinator", fresh, "--bootstrap-key-file", c.dir+"/none.key", "--admin-dir", c.otherAdminDir),
		cli("cli", "activate an active coordinator", "exit 1", "activate", "--coordinator", coord, "--bootstrap-key-file", c.keyFile, "--admin-dir", c.otherAdminDir),
		cli("cli", "activate into a complete admin dir", "exit 1", "activate", "--coordinator", fresh, "--bootstrap-key-file", c.keyFile, "--admin-dir", c.adminDir),
		cli("cli", "users add with a bad name", "exit 2", with("users", "add", "Root!", "--key", key)...),
		cli("cli", "users add with a bad key", "exit 2", with("users", "add", "alice", "--key", "ssh-ed25519 AAAA")...),
		cli("cli", "users add without a key", "exit 2", with("users", "add", "alice")...),
		cli("cli", "users remove of no user", "exit 1", with("users", "remove", "nobody")...),
		cli("cli", "nodes remove of the coordinator", "exit 2", with("nodes", "remove", "coord", "--yes")...),
		cli("cli", "nodes remove of no node", "exit 1", with("nodes", "remove", "node9", "--yes")...),
		cli("cli", "nodes remove without a node", "exit 2", with("nodes", "remove")...),
		cli("cli", "coordinators add without a port", "exit 2", with("coordinators", "add", "198.51.100.10")...),

		// fabricd's config file: exit 2, the state dir untouched.
		{area: "config", name: "unknown key", want: "exit 2", do: c.fabricd(config(listen, "wg_port: 51820"))},
		{area: "config", name: "string for an integer", want: "exit 2", do: c.fabricd(config(listen, "wg-port: many"))},
		{area: "config", name: "port out of range", want: "exit 2", do: c.fabricd(config(listen, "wg-port: 70000"))},
		{area: "config", name: "duplicate key", want: "exit 2", do: c.fabricd(config(listen, listen))},
		{area: "config", name: "listen without a port", want: "exit 2", do: c.fabricd(config("listen: 127.0.0.1"))},
		{area: "config", name: "no listen", want: "exit 2", do: c.fabricd(config())},
		{area: "config", name: "unknown log level", want: "exit 2", do: c.fabricd(config(listen, "log-level: loud"))},
		{area: "config", name: "not a mapping", want: "exit 2", do: c.fabricd("- listen\n")},
		{area: "config", name: "YAML syntax error", want: "exit 2", do: c.fabricd(config(listen, "name: [node"))},
		{area: "config", name: "malformed store address", want: "exit 2", do: c.fabricd(config(listen, "store: etcd://"))},
		{area: "config", name: "unknown flag", want: "exit 2", do: c.fabricd(config(listen), "--wg_port", "1")},

		// Rules files: the CLI checks them before sending (exit 2), the
		// coordinator checks them again (InvalidArgument).
		cli("rules", "unknown field", "exit 2", c.activateWithRules(t, "field.yaml", "rules:\n  - {client: pastiche, service: pastiche, scop: cluster}\n")...),
		cli("rules", "unknown scope", "exit 2", c.activateWithRules(t, "scope.yaml", "rules:\n  - {client: pastiche, service: pastiche, scope: world}\n")...),
		cli("rules", "undeclared service", "exit 2", c.activateWithRules(t, "undeclared.yaml", "rules:\n  - {client: billing, service: ledger, scope: horde}\n")...),
		cli("rules", "file over 128 KiB", "exit 2", c.activateWithRules(t, "big.yaml", "rules: []\n"+strings.Repeat("# padding\n", 14000))...),
		{area: "rules", name: "too many services (the coordinator)", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.Rules = manyServices(257) })},
		{area: "rules", name: "a built-in service declared (the coordinator)", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.Rules = "services: [reeve]\nrules: []\n" })},
		{area: "rules", name: "YAML syntax error (the coordinator)", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.Rules = "rules: [" })},

		// The pubapi.
		{area: "pubapi", name: "activate an active coordinator", want: "FailedPrecondition", do: call(func(ctx context.Context) error {
			stream, err := c.bootCoord.ActivateAsCoordinator(ctx, c.activateRequest(t, func(*pubapipb.ActivateAsCoordinatorRequest) {}))
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		})},
		{area: "pubapi", name: "activate with a /30", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.VpnCidr = "203.0.113.0/30" })},
		{area: "pubapi", name: "activate with a short admin key", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.AdminSigningPubKey = r.AdminSigningPubKey[:31] })},
		{area: "pubapi", name: "resume an activation with the admin's key but no proof", want: "FailedPrecondition", do: call(func(ctx context.Context) error {
			stream, err := c.bootCoord.ActivateAsCoordinator(ctx, &pubapipb.ActivateAsCoordinatorRequest{
				VpnCidr: "203.0.113.0/24", AdminSigningPubKey: c.adminKey.Public().(ed25519.PublicKey), AdminVpnPubKey: c.adminVPNPubKey,
				AdminName: "admin", AdminProof: bytes.Repeat([]byte{1}, 64)})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		})},
		{area: "pubapi", name: "activate with a bad users file", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.Users = "users:\n  - {name: Root!, keys: []}\n" })},
		{area: "pubapi", name: "activate with 1025 nodes", want: "InvalidArgument", do: c.activateFresh(func(r *pubapipb.ActivateAsCoordinatorRequest) { r.NodePublicEndpoints = manyEndpoints(1025) })},
		{area: "pubapi", name: "activate the coordinator as a node", want: "FailedPrecondition", do: c.activateAsNode(c.bootCoord, func(*pubapipb.ActivateAsNodeRequest) {})},
		{area: "pubapi", name: "activate as a node with a malformed VPN IP", want: "InvalidArgument", do: c.activateAsNode(c.bootFresh, func(r *pubapipb.ActivateAsNodeRequest) { r.NodeVpnIp = "203.0.113" })},
		{area: "pubapi", name: "activate as a node outside the CIDR", want: "InvalidArgument", do: c.activateAsNode(c.bootFresh, func(r *pubapipb.ActivateAsNodeRequest) { r.NodeVpnIp = "198.51.100.20" })},
		{area: "pubapi", name: "activate as a node with a short coordinator key", want: "InvalidArgument", do: c.activateAsNode(c.bootFresh, func(r *pubapipb.ActivateAsNodeRequest) { r.CoordinatorVpnPubKey = []byte{1} })},
		{area: "pubapi", name: "add nodes with the bootstrap key", want: "PermissionDenied", do: c.addNodes(c.bootCoord, []string{fresh})},
		{area: "pubapi", name: "add 1025 nodes", want: "InvalidArgument", do: c.addNodes(c.admin, manyEndpoints(1025))},
		{area: "pubapi", name: "add a node twice", want: "InvalidArgument", do: c.addNodes(c.admin, []string{fresh, fresh})},
		{area: "pubapi", name: "SSH user with a bad name", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.admin.AddSSHUser(ctx, &pubapipb.AddSSHUserRequest{Name: "Root!", Keys: []string{key}})
			return err
		})},
		{area: "pubapi", name: "SSH user with a bad key", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.admin.AddSSHUser(ctx, &pubapipb.AddSSHUserRequest{Name: "alice", Keys: []string{"ssh-rsa AAAA"}})
			return err
		})},
		{area: "pubapi", name: "SSH user added with the bootstrap key", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.bootCoord.AddSSHUser(ctx, &pubapipb.AddSSHUserRequest{Name: "alice", Keys: []string{key}})
			return err
		})},
		{area: "pubapi", name: "remove no SSH user", want: "NotFound", do: call(func(ctx context.Context) error {
			_, err := c.admin.RemoveSSHUser(ctx, &pubapipb.RemoveSSHUserRequest{Name: "nobody"})
			return err
		})},
		{area: "pubapi", name: "remove the coordinator", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.admin.RemoveNode(ctx, &pubapipb.RemoveNodeRequest{Node: c.l.coord.Core().Status().VPNIP.String()})
			return err
		})},
		{area: "pubapi", name: "remove no node", want: "NotFound", do: call(func(ctx context.Context) error {
			_, err := c.admin.RemoveNode(ctx, &pubapipb.RemoveNodeRequest{Node: "203.0.113.250"})
			return err
		})},
		{area: "pubapi", name: "leave with a forged signature", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.bootNode1.Leave(ctx, &pubapipb.LeaveRequest{ClusterId: c.l.node1.Core().Status().ClusterID, NodeVpnIp: c.l.node1.Core().Status().VPNIP.String(), Signature: bytes.Repeat([]byte{2}, 64)})
			return err
		})},
		{area: "pubapi", name: "add a coordinator on a bbolt store", want: "FailedPrecondition", do: call(func(ctx context.Context) error {
			_, err := c.admin.AddCoordinator(ctx, &pubapipb.AddCoordinatorRequest{PublicEndpoint: fresh})
			return err
		})},
		{area: "pubapi", name: "join as a coordinator of no shared store", want: "FailedPrecondition", do: call(func(ctx context.Context) error {
			_, err := c.bootFresh.JoinAsCoordinator(ctx, &pubapipb.JoinAsCoordinatorRequest{ClusterId: "7a03e15ba6732618", VpnIp: "203.0.113.20"})
			return err
		})},
		{area: "pubapi", name: "an admin key the coordinator does not know", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.unknownAdmin.GetState(ctx, &pubapipb.GetStateRequest{})
			return err
		})},
		{area: "pubapi", name: "a wrong bootstrap key", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.wrongBootstrap.GetState(ctx, &pubapipb.GetStateRequest{})
			return err
		})},

		// The vpnapi and the steward, over the VPN.
		{area: "vpnapi", name: "register a short reeve key", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.vpnNode1.Register(ctx, &vpnapipb.RegisterRequest{ReevePubKey: []byte{1, 2, 3}})
			return err
		})},
		{area: "vpnapi", name: "register with a key of no node", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.vpnFresh.Register(ctx, &vpnapipb.RegisterRequest{ReevePubKey: bytes.Repeat([]byte{4}, 32)})
			return err
		})},
		{area: "vpnapi", name: "watch with a key of no node", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			stream, err := c.vpnFresh.WatchUpdates(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&vpnapipb.WatchRequest{}); err != nil {
				_, err = stream.Recv()
				return err
			}
			_, err = stream.Recv()
			return err
		})},
		{area: "vpnapi", name: "unsigned steward update", want: "Unauthenticated", do: call(func(ctx context.Context) error {
			_, err := c.stewardUnsigned.UpdateServices(ctx, &vpnapipb.UpdateServicesRequest{})
			return err
		})},
		{area: "vpnapi", name: "steward update by a service, not a reeve", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.stewardAsPastiche.UpdateServices(ctx, &vpnapipb.UpdateServicesRequest{})
			return err
		})},
		{area: "vpnapi", name: "steward update with a forged reeve key", want: "Unauthenticated", do: call(func(ctx context.Context) error {
			_, err := c.stewardForged.UpdateServices(ctx, &vpnapipb.UpdateServicesRequest{})
			return err
		})},

		// node1's reeve socket.
		{area: "reeve", name: "endpoint with an upper-case name", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: "Ledger", Port: 9000})
			return err
		})},
		{area: "reeve", name: "endpoint on port 0", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: "ledger", Port: 0})
			return err
		})},
		{area: "reeve", name: "endpoint on port 70000", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: "ledger", Port: 70000})
			return err
		})},
		{area: "reeve", name: "endpoint named like the steward", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterEndpoint(ctx, &reevepb.RegisterEndpointRequest{Service: "steward", Port: 9000})
			return err
		})},
		{area: "reeve", name: "client fabric-admin", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterClient(ctx, &reevepb.RegisterClientRequest{Service: "fabric-admin"})
			return err
		})},
		{area: "reeve", name: "client named like the reeve", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterClient(ctx, &reevepb.RegisterClientRequest{Service: "reeve"})
			return err
		})},
		{area: "reeve", name: "client with an empty name", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.RegisterClient(ctx, &reevepb.RegisterClientRequest{})
			return err
		})},
		{area: "reeve", name: "sign as a client never registered", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.local.Sign(ctx, &reevepb.SignRequest{Client: "billing@node1", Data: []byte("x")})
			return err
		})},
		{area: "reeve", name: "sign as another node's client", want: "PermissionDenied", do: call(func(ctx context.Context) error {
			_, err := c.local.Sign(ctx, &reevepb.SignRequest{Client: "pastiche@node2", Data: []byte("x")})
			return err
		})},
		{area: "reeve", name: "look up for an endpoint never registered", want: "NotFound", do: call(func(ctx context.Context) error {
			_, err := c.local.Lookup(ctx, &reevepb.LookupRequest{Endpoint: "ledger@node1", Client: "pastiche@node2"})
			return err
		})},
		{area: "reeve", name: "endpoints up for a client never registered", want: "InvalidArgument", do: call(func(ctx context.Context) error {
			_, err := c.local.EndpointsUp(ctx, &reevepb.EndpointsUpRequest{Client: "billing@node1", Service: "pastiche"})
			return err
		})},

		// pastiche: through the coordinator's relay, and signed calls
		// straight to the pastiche endpoints.
		cli("pastiche", "send across hordes", "exit 1", with("pastiche", "send", "--from", "node1", "--to", "node2", c.dir+"/report.pdf")...),
		cli("pastiche", "send a missing file", "exit 1", with("pastiche", "send", "--from", "node1", "--to", "coord", c.dir+"/none.pdf")...),
		cli("pastiche", "send under a path", "exit 2", with("pastiche", "send", "--from", "node1", "--to", "coord", "--name", "../x", c.dir+"/report.pdf")...),
		{area: "pastiche", name: "relay: a name with a slash", want: "InvalidArgument", do: c.pasticheSend(sendHeader("node1", "coord", "../x", 3), sendChunk("abc"))},
		{area: "pastiche", name: "relay: a chunk first", want: "InvalidArgument", do: c.pasticheSend(sendChunk("abc"))},
		{area: "pastiche", name: "relay: from no node", want: "PermissionDenied", do: c.pasticheSend(sendHeader("node9", "coord", "x", 3), sendChunk("abc"))},
		{area: "pastiche", name: "relay: fewer bytes than the size", want: "InvalidArgument", do: c.pasticheSend(sendHeader("node1", "coord", "short", 10), sendChunk("abc"))},
		{area: "pastiche", name: "relay: across hordes", want: "PermissionDenied", do: c.pasticheSend(sendHeader("node1", "node2", "x", 3), sendChunk("abc"))},
		{area: "pastiche", name: "put across hordes (the endpoint does not know the client)", want: "Unauthenticated", do: put(c.pasticheNode1ToNode2, &pastichepb.FileHeader{Name: "x", Size: 3}, "abc")},
		{area: "pastiche", name: "put unsigned", want: "Unauthenticated", do: put(c.pasticheUnsigned, &pastichepb.FileHeader{Name: "x", Size: 3}, "abc")},
		{area: "pastiche", name: "put a hidden name", want: "InvalidArgument", do: put(c.pasticheNode1ToCoord, &pastichepb.FileHeader{Name: ".x", Size: 3}, "abc")},
		{area: "pastiche", name: "put more bytes than the size", want: "InvalidArgument", do: put(c.pasticheNode1ToCoord, &pastichepb.FileHeader{Name: "long", Size: 1}, "abc")},
		{area: "pastiche", name: "put with a wrong SHA-256", want: "DataLoss", do: put(c.pasticheNode1ToCoord, &pastichepb.FileHeader{Name: "sum", Size: 3, Sha256: bytes.Repeat([]byte{1}, 32)}, "abc")},
		{area: "pastiche", name: "put a negative size", want: "InvalidArgument", do: put(c.pasticheNode1ToCoord, &pastichepb.FileHeader{Name: "neg", Size: -1}, "")},
	}
}
