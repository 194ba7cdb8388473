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
	"time"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// DefaultVPNCIDR is the VPN range of `fabric activate` without --vpn-cidr.
const DefaultVPNCIDR = "10.77.0.0/16"

const defaultAdminName = "admin"

func newActivateCmd() *cobra.Command {
	var (
		a                   activation
		nodes, adminDirFlag string
		timeout             time.Duration
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
printed and 'fabric add-nodes' can retry it (one that could not be reached
is retried by the coordinator on its own).

An activation cannot be lost halfway: the admin keys are kept once the
request may have reached the coordinator, and if the answer breaks off
(the coordinator restarted, the network failed) the command asks again
until --timeout, and the coordinator, which recognizes its admin, resumes.
Running the same command again with the same --admin-dir resumes it too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if a.coordinatorEndpoint, err = parseEndpoint("--coordinator", a.coordinatorEndpoint); err != nil {
				return err
			}
			if a.nodeEndpoints, err = parseEndpoints("--nodes", nodes, a.coordinatorEndpoint); err != nil {
				return err
			}
			if a.keyFile == "" {
				return usagef("--bootstrap-key-file is required")
			}
			if _, err := records.ParseVPNCIDR(a.vpnCIDR); err != nil {
				return usagef("--vpn-cidr: %v", err)
			}
			if !cmd.Flags().Changed("timeout") {
				timeout = activationTimeout(len(a.nodeEndpoints))
			}
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			if a.bootstrapKey, err = bootstrapkey.ReadFile(a.keyFile); err != nil {
				return fmt.Errorf("--bootstrap-key-file: %w", err)
			}
			if a.rules, err = readRules(a.rulesName); err != nil {
				return err
			}
			if a.users, err = readUsers(a.usersName); err != nil {
				return err
			}
			a.adminDir = osEnvironment.newAdminDir(adminDirFlag)
			return activate(ctx, cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.coordinatorEndpoint, "coordinator", "", "pubapi endpoint IP:PORT of the peer to make the coordinator (required)")
	f.StringVar(&nodes, "nodes", "", "comma-separated pubapi endpoints IP:PORT of the peers to make nodes")
	f.StringVar(&a.keyFile, "bootstrap-key-file", "", "the cluster's bootstrap key, as written by 'fabric key' (required)")
	f.StringVar(&a.vpnCIDR, "vpn-cidr", DefaultVPNCIDR, "VPN address range; the coordinator takes its first address")
	f.StringVar(&adminDirFlag, "admin-dir", "", "where to write the admin bundle, which must not hold a complete one; the keys of an unfinished activation resume it (default: $"+adminDirEnv+", else ./"+localAdminDir+")")
	f.StringVar(&a.adminName, "admin-name", defaultAdminName, "the admin's name in the cluster")
	f.StringVar(&a.rulesName, "rules", "", "connectivity rules file (YAML); default: pastiche may call pastiche within a horde")
	f.StringVar(&a.usersName, "users", "", "SSH users file (YAML): users every peer creates with their authorized keys; default: none")
	addTimeoutFlag(cmd, &timeout, 0, "give up after this long (default 2m plus 1m per 32 nodes)")
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
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
}

// parseEndpoints parses a comma-separated list of node endpoints, none
// listed twice and none a coordinator's.
func parseEndpoints(flag, s string, coordinatorEndpoints ...string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		ep, err := parseEndpoint(flag, part)
		if err != nil {
			return nil, err
		}
		switch {
		case seen[ep]:
			return nil, usagef("%s: %s is listed twice", flag, ep)
		case slices.Contains(coordinatorEndpoints, ep):
			return nil, usagef("%s: %s is the coordinator's own endpoint, not a node's", flag, ep)
		}
		seen[ep] = true
		out = append(out, ep)
	}
	return out, nil
}

// activation is what `fabric activate` was asked.
type activation struct {
	coordinatorEndpoint string
	nodeEndpoints       []string
	keyFile             string
	bootstrapKey        []byte
	vpnCIDR             string
	adminDir            string
	adminName           string
	rules, rulesName    string
	users, usersName    string
}

// command is the `fabric activate` that repeats a, which resumes it.
func (a activation) command() string {
	args := []string{"activate", "--coordinator", a.coordinatorEndpoint}
	if len(a.nodeEndpoints) > 0 {
		args = append(args, "--nodes", strings.Join(a.nodeEndpoints, ","))
	}
	args = append(args, "--bootstrap-key-file", a.keyFile, "--vpn-cidr", a.vpnCIDR, "--admin-dir", a.adminDir)
	if a.adminName != defaultAdminName {
		args = append(args, "--admin-name", a.adminName)
	}
	if a.rulesName != "" {
		args = append(args, "--rules", a.rulesName)
	}
	if a.usersName != "" {
		args = append(args, "--users", a.usersName)
	}
	return commandLine(args...)
}

func activate(ctx context.Context, out io.Writer, a activation) error {
	admin, created, err := openAdminKeys(a.adminDir, a.coordinatorEndpoint)
	if err != nil {
		return err
	}
	admin.bundle.AdminName = a.adminName
	if created {
		fmt.Fprintf(out, "activating %s as coordinator of a new cluster (VPN %s)\n", a.coordinatorEndpoint, a.vpnCIDR)
	} else {
		fmt.Fprintf(out, "resuming with the admin keys of an unfinished activation in %s: activating %s as coordinator (VPN %s)\n",
			a.adminDir, a.coordinatorEndpoint, a.vpnCIDR)
	}
	s := &activationStream{
		out: out, admin: admin, nodes: a.nodeEndpoints, what: "activating coordinator " + a.coordinatorEndpoint,
		again:          a.command(),
		mayBeCommitted: !created, // the keys of an earlier run's request
		onStarted: func(stream grpc.ClientStream, started *pubapipb.ActivationStarted) error {
			return admin.started(stream, a, started, out)
		},
		dial: func() (*pubapi.Client, error) {
			return pubapi.Dial(a.coordinatorEndpoint, authconn.ClientConfig{BootstrapKey: a.bootstrapKey, ServerCertPin: admin.bundle.CoordinatorTLSPin})
		},
		open: func(ctx context.Context, c *pubapi.Client) (grpc.ServerStreamingClient[pubapipb.ActivationEvent], error) {
			return openActivation(ctx, c, a, admin)
		},
	}
	err = s.run(ctx)
	if err != nil && created && !s.mayBeCommitted {
		// The coordinator cannot have committed them: take them back.
		admin.removeKeys()
	}
	return err
}

// started writes admin.json as soon as the cluster exists, so that the
// admin keeps access whatever happens next.
func (admin *adminDir) started(stream grpc.ClientStream, a activation, started *pubapipb.ActivationStarted, out io.Writer) error {
	info, ok := authconn.FromContext(stream.Context())
	if !ok {
		return fmt.Errorf("connection to %s is not authenticated", a.coordinatorEndpoint)
	}
	admin.bundle = bundle{
		ClusterID: started.GetClusterId(), CoordinatorPublicEndpoint: a.coordinatorEndpoint, CoordinatorTLSPin: info.ServerCertPin,
		AdminName: a.adminName, AdminVPNIP: started.GetAdminVpnIp(), VPNCIDR: started.GetVpnCidr(),
	}
	if err := admin.writeBundle(); err != nil {
		return err
	}
	if started.GetResumed() {
		fmt.Fprintf(out, "cluster %s exists: its activation resumes; admin bundle in %s\n", admin.bundle.ClusterID, osEnvironment.describeAdminDir(admin.path))
	} else {
		fmt.Fprintf(out, "cluster %s created; admin bundle in %s\n", admin.bundle.ClusterID, osEnvironment.describeAdminDir(admin.path))
	}
	return nil
}

// openActivation asks the coordinator for its state first, which tells
// the pin of its certificate, then sends the activation with the admin's
// proof for that pin.
func openActivation(ctx context.Context, c *pubapi.Client, a activation, admin *adminDir) (grpc.ServerStreamingClient[pubapipb.ActivationEvent], error) {
	var p peer.Peer
	if _, err := c.GetState(ctx, &pubapipb.GetStateRequest{}, grpc.Peer(&p)); err != nil {
		return nil, errNotSent{err}
	}
	info, ok := p.AuthInfo.(*authconn.AuthInfo)
	if !ok {
		return nil, errNotSent{fmt.Errorf("connection to %s is not authenticated", a.coordinatorEndpoint)}
	}
	vpnPubKey := admin.adminVPNPrivKey.PublicKey()
	return c.ActivateAsCoordinator(ctx, &pubapipb.ActivateAsCoordinatorRequest{
		VpnCidr:             a.vpnCIDR,
		NodePublicEndpoints: a.nodeEndpoints,
		AdminSigningPubKey:  admin.adminSigningKey.Public().(ed25519.PublicKey),
		AdminVpnPubKey:      vpnPubKey[:],
		AdminName:           a.adminName,
		Rules:               a.rules,
		RulesName:           a.rulesName,
		Users:               a.users,
		UsersName:           a.usersName,
		AdminProof:          ed25519.Sign(admin.adminSigningKey, core.ActivationProofMessage(info.ServerCertPin, vpnPubKey[:])),
	})
}

func newAddNodesCmd() *cobra.Command {
	var (
		nodes, adminDir string
		timeout         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add-nodes --nodes IP:PORT[,...]",
		Short: "Activate more nodes (or retry failed ones) in an active cluster",
		Long: `add-nodes asks the coordinator of the admin bundle to activate the given peers
as nodes, concurrently, and prints each outcome. Peers already active are
reported as such. The admin's wg-quick config is rewritten with the new peers.
If the answer breaks off, the command asks again until --timeout; the
coordinator finishes the nodes it accepted on its own.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodeList, err := parseEndpoints("--nodes", nodes)
			if err != nil {
				return err
			}
			if len(nodeList) == 0 {
				return usagef("--nodes is required")
			}
			if !cmd.Flags().Changed("timeout") {
				timeout = activationTimeout(len(nodeList))
			}
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			admin, err := openAdminDir(adminDir)
			if err != nil {
				return err
			}
			var coordinatorEndpoints []string
			for _, co := range admin.bundle.coordinators() {
				coordinatorEndpoints = append(coordinatorEndpoints, co.PublicEndpoint)
			}
			if _, err := parseEndpoints("--nodes", nodes, coordinatorEndpoints...); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			asked := ""
			s := &activationStream{
				out: out, admin: admin, nodes: nodeList, what: "adding nodes",
				again: commandLine("add-nodes", "--admin-dir", admin.path, "--nodes", strings.Join(nodeList, ",")),
				// Each attempt asks the first coordinator that answers.
				dial: func() (*pubapi.Client, error) {
					c, err := admin.dial()
					if err == nil && c.Endpoint() != asked {
						asked = c.Endpoint()
						fmt.Fprintf(out, "asking coordinator %s to activate %d node(s)\n", asked, len(nodeList))
					}
					return c, err
				},
				open: func(ctx context.Context, c *pubapi.Client) (grpc.ServerStreamingClient[pubapipb.ActivationEvent], error) {
					return c.ActivateAdditionalNodes(ctx, &pubapipb.ActivateAdditionalNodesRequest{NodePublicEndpoints: nodeList})
				},
			}
			return s.run(ctx)
		},
	}
	cmd.Flags().StringVar(&nodes, "nodes", "", "comma-separated pubapi endpoints IP:PORT of the peers to activate (required)")
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, 0, "give up after this long (default 2m plus 1m per 32 nodes)")
	return cmd
}
