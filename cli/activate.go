package cli

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// DefaultVPNCIDR is the VPN range of `fabric activate` without --vpn-cidr.
const DefaultVPNCIDR = "10.77.0.0/16"

func newActivateCmd() *cobra.Command {
	var (
		coordinator, nodes, keyFile, vpnCIDR, adminDir, adminName, rulesFile, usersFile string
	)
	cmd := &cobra.Command{
		Use:   "activate --coordinator IP:PORT --nodes IP:PORT[,...] --bootstrap-key-file FILE",
		Short: "Create a cluster: make one peer the coordinator and activate the others as nodes",
		Long: `activate makes the peer at --coordinator the coordinator of a new cluster,
which then activates every peer of --nodes concurrently. Progress is printed as
it happens. At the end the admin bundle is written to --admin-dir (default:
$FABRIC_ADMIN_DIR, else ./fabric-admin), and activate says where: the
coordinator's endpoint and TLS pin, the admin key that later commands use, and
a wg-quick config (fabric-vpn.conf) that puts this machine on the VPN.

The SSH users of --users (see 'fabric users') are created on every peer.
A node that cannot be activated does not stop the others; its error is
printed and 'fabric add-nodes' can retry it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			endpoint, err := parseEndpoint("--coordinator", coordinator)
			if err != nil {
				return err
			}
			nodeList, err := parseEndpoints("--nodes", nodes)
			if err != nil {
				return err
			}
			if keyFile == "" {
				return usagef("--bootstrap-key-file is required")
			}
			if _, err := records.ParseVPNCIDR(vpnCIDR); err != nil {
				return usagef("--vpn-cidr: %v", err)
			}
			key, err := bootstrapkey.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("--bootstrap-key-file: %w", err)
			}
			rules, err := readRules(rulesFile)
			if err != nil {
				return err
			}
			users, err := readUsers(usersFile)
			if err != nil {
				return err
			}
			return activate(cmd.Context(), cmd.OutOrStdout(), activation{
				coordinatorEndpoint: endpoint, nodeEndpoints: nodeList, bootstrapKey: key,
				vpnCIDR: vpnCIDR, adminDir: osEnvironment.newAdminDir(adminDir), adminName: adminName, rules: rules, rulesName: rulesFile,
				users: users, usersName: usersFile,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&coordinator, "coordinator", "", "pubapi endpoint IP:PORT of the peer to make the coordinator (required)")
	f.StringVar(&nodes, "nodes", "", "comma-separated pubapi endpoints IP:PORT of the peers to make nodes")
	f.StringVar(&keyFile, "bootstrap-key-file", "", "the cluster's bootstrap key, as written by 'fabric key' (required)")
	f.StringVar(&vpnCIDR, "vpn-cidr", DefaultVPNCIDR, "VPN address range; the coordinator takes its first address")
	f.StringVar(&adminDir, "admin-dir", "", "where to write the admin bundle, which must not hold one already (default: $"+adminDirEnv+", else ./"+localAdminDir+")")
	f.StringVar(&adminName, "admin-name", "admin", "the admin's name in the cluster")
	f.StringVar(&rulesFile, "rules", "", "connectivity rules file (YAML); default: pastiche may call pastiche within a horde")
	f.StringVar(&usersFile, "users", "", "SSH users file (YAML): users every peer creates with their authorized keys; default: none")
	return cmd
}

// readRules reads and checks a rules file ("" gives the default rules).
func readRules(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--rules: %w", err)
	}
	if _, err := rules.ParseOrDefault(path, string(data)); err != nil {
		return "", usagef("--rules: %v", err)
	}
	return string(data), nil
}

func parseEndpoint(flag, s string) (string, error) {
	if s == "" {
		return "", usagef("%s is required", flag)
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
	if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return "", usagef("%s: %q is not an endpoint IP:PORT", flag, s)
	}
	return ap.String(), nil
}

func parseEndpoints(flag, s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		ep, err := parseEndpoint(flag, part)
		if err != nil {
			return nil, err
		}
		out = append(out, ep)
	}
	return out, nil
}

type activation struct {
	coordinatorEndpoint string
	nodeEndpoints       []string
	bootstrapKey        []byte
	vpnCIDR             string
	adminDir            string
	adminName           string
	rules, rulesName    string
	users, usersName    string
}

func activate(ctx context.Context, out io.Writer, a activation) error {
	admin, err := newAdminKeys(a.adminDir)
	if err != nil {
		return err
	}
	admin.bundle.AdminName = a.adminName
	client, err := pubapi.Dial(a.coordinatorEndpoint, authconn.ClientConfig{BootstrapKey: a.bootstrapKey})
	if err != nil {
		admin.removeKeys()
		return err
	}
	defer client.Close()
	vpnPubKey := admin.adminVPNPrivKey.PublicKey()
	fmt.Fprintf(out, "activating %s as coordinator of a new cluster (VPN %s)\n", a.coordinatorEndpoint, a.vpnCIDR)
	stream, err := client.ActivateAsCoordinator(ctx, &pubapipb.ActivateAsCoordinatorRequest{
		VpnCidr:             a.vpnCIDR,
		NodePublicEndpoints: a.nodeEndpoints,
		AdminSigningPubKey:  admin.adminSigningKey.Public().(ed25519.PublicKey),
		AdminVpnPubKey:      vpnPubKey[:],
		AdminName:           a.adminName,
		Rules:               a.rules,
		RulesName:           a.rulesName,
		Users:               a.users,
		UsersName:           a.usersName,
	})
	if err == nil {
		err = receiveStarted(stream, admin, a.coordinatorEndpoint)
	}
	if err != nil {
		// Nothing was created on the coordinator: take the keys back.
		admin.removeKeys()
		return rpcError("activating coordinator "+a.coordinatorEndpoint, err)
	}
	fmt.Fprintf(out, "cluster %s created; admin bundle in %s\n", admin.bundle.ClusterID, osEnvironment.describeAdminDir(a.adminDir))
	return followActivation(out, stream, admin)
}

// receiveStarted waits for the coordinator's first event and writes the
// admin bundle, so that the admin keeps access even if the stream breaks
// later.
func receiveStarted(stream grpc.ServerStreamingClient[pubapipb.ActivationEvent], admin *adminDir, endpoint string) error {
	ev, err := stream.Recv()
	if err != nil {
		return err
	}
	started := ev.GetStarted()
	if started == nil {
		return fmt.Errorf("coordinator sent %T before the cluster was created", ev.GetEvent())
	}
	info, ok := authconn.FromContext(stream.Context())
	if !ok {
		return fmt.Errorf("connection to %s is not authenticated", endpoint)
	}
	admin.bundle = bundle{
		ClusterID: started.GetClusterId(), CoordinatorPublicEndpoint: endpoint, CoordinatorTLSPin: info.ServerCertPin,
		AdminName: admin.bundle.AdminName, AdminVPNIP: started.GetAdminVpnIp(), VPNCIDR: started.GetVpnCidr(),
	}
	return admin.writeBundle()
}

// followActivation prints the events of an activation stream, writes the
// admin's wg-quick config from the final cluster status, and fails (exit 1)
// if a node failed, saying how to retry.
func followActivation(out io.Writer, stream grpc.ServerStreamingClient[pubapipb.ActivationEvent], admin *adminDir) error {
	var failed []string
	for {
		ev, err := stream.Recv()
		if err != nil {
			return rpcError("activation stream broke (it goes on at the coordinator; see 'fabric status')", err)
		}
		switch e := ev.GetEvent().(type) {
		case *pubapipb.ActivationEvent_Progress:
			fmt.Fprintf(out, "  %s\n", e.Progress)
		case *pubapipb.ActivationEvent_Node:
			n := e.Node
			if n.GetError() != "" {
				failed = append(failed, n.GetNodePublicEndpoint())
				fmt.Fprintf(out, "  FAILED node %s: %s\n", n.GetNodePublicEndpoint(), n.GetError())
				continue
			}
			fmt.Fprintf(out, "  ok     node %s: %s, VPN IP %s, horde %s\n",
				n.GetNodePublicEndpoint(), n.GetPeer().GetName(), n.GetPeer().GetVpnIp(), n.GetPeer().GetHorde())
		case *pubapipb.ActivationEvent_Result:
			return finishActivation(out, admin, e.Result, failed)
		}
	}
}

func finishActivation(out io.Writer, admin *adminDir, res *pubapipb.ActivationResult, failed []string) error {
	if err := admin.writeWGQuick(res.GetCluster()); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d node(s) activated, %d failed; cluster revision %d\n", res.GetActivated(), res.GetFailed(), res.GetCluster().GetRevision())
	fmt.Fprintf(out, "this machine joins the VPN with: wg-quick up %s\n", admin.file(wgQuickFile))
	if len(failed) > 0 {
		slices.Sort(failed)
		return &exitError{code: 1, msg: fmt.Sprintf("%d node(s) failed: %s\nfix them, then retry: fabric add-nodes --admin-dir %s --nodes %s",
			len(failed), strings.Join(failed, ", "), admin.path, strings.Join(failed, ","))}
	}
	return nil
}

func newAddNodesCmd() *cobra.Command {
	var nodes, adminDir string
	cmd := &cobra.Command{
		Use:   "add-nodes --nodes IP:PORT[,...]",
		Short: "Activate more nodes (or retry failed ones) in an active cluster",
		Long: `add-nodes asks the coordinator of the admin bundle to activate the given peers
as nodes, concurrently, and prints each outcome. Peers already active are
reported as such. The admin's wg-quick config is rewritten with the new peers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodeList, err := parseEndpoints("--nodes", nodes)
			if err != nil {
				return err
			}
			if len(nodeList) == 0 {
				return usagef("--nodes is required")
			}
			admin, err := openAdminDir(adminDir)
			if err != nil {
				return err
			}
			client, err := admin.dial()
			if err != nil {
				return err
			}
			defer client.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "asking coordinator %s to activate %d node(s)\n", admin.bundle.CoordinatorPublicEndpoint, len(nodeList))
			stream, err := client.ActivateAdditionalNodes(cmd.Context(), &pubapipb.ActivateAdditionalNodesRequest{NodePublicEndpoints: nodeList})
			if err != nil {
				return rpcError("adding nodes", err)
			}
			return followActivation(out, stream, admin)
		},
	}
	cmd.Flags().StringVar(&nodes, "nodes", "", "comma-separated pubapi endpoints IP:PORT of the peers to activate (required)")
	addAdminDirFlag(cmd, &adminDir)
	return cmd
}
