package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// bundleCoordinator is one coordinator of the cluster in the admin bundle.
type bundleCoordinator struct {
	PublicEndpoint string `json:"publicEndpoint"`
	TLSPin         []byte `json:"tlsPin"`
}

// coordinators lists the coordinators of the bundle, the one that
// activated the cluster first.
func (b bundle) coordinators() []bundleCoordinator {
	out := []bundleCoordinator{{PublicEndpoint: b.CoordinatorPublicEndpoint, TLSPin: b.CoordinatorTLSPin}}
	for _, c := range b.Coordinators {
		if c.PublicEndpoint != b.CoordinatorPublicEndpoint {
			out = append(out, c)
		}
	}
	return out
}

// probeTimeout bounds how long the CLI waits for one coordinator before it
// tries the next.
const probeTimeout = 3 * time.Second

// dial connects to a coordinator of the bundle with the admin key, pinning
// its certificate: the first that answers, so the CLI fails over when a
// coordinator is down.
func (a *adminDir) dial() (*pubapi.Client, error) { return a.dialWith() }

// dialWith is dial with extra options.
func (a *adminDir) dialWith(extra ...grpc.DialOption) (*pubapi.Client, error) {
	var first error
	for _, co := range a.bundle.coordinators() {
		c, err := pubapi.Dial(co.PublicEndpoint, authconn.ClientConfig{SigningPrivKey: a.adminSigningKey, ServerCertPin: co.TLSPin}, extra...)
		if err != nil {
			return nil, err
		}
		if len(a.bundle.Coordinators) == 0 {
			return c, nil // one coordinator: its errors say enough
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		_, err = c.GetState(ctx, &pubapipb.GetStateRequest{})
		cancel()
		if err == nil {
			return c, nil
		}
		c.Close()
		if first == nil {
			first = rpcError("asking coordinator "+co.PublicEndpoint, err)
		}
	}
	return nil, fmt.Errorf("no coordinator of the admin bundle answers: %w", first)
}

// rememberCoordinators writes the cluster's active coordinators into the
// bundle, so that later commands can fail over to any of them.
func (a *adminDir) rememberCoordinators(cluster *pubapipb.ClusterStatus) error {
	var cos []bundleCoordinator
	for _, p := range cluster.GetPeers() {
		if p.GetRole() == "coordinator" && p.GetState() == "active" && len(p.GetTlsPin()) > 0 {
			cos = append(cos, bundleCoordinator{PublicEndpoint: p.GetPublicEndpoint(), TLSPin: p.GetTlsPin()})
		}
	}
	if slices.EqualFunc(cos, a.bundle.Coordinators, func(x, y bundleCoordinator) bool {
		return x.PublicEndpoint == y.PublicEndpoint && string(x.TLSPin) == string(y.TLSPin)
	}) {
		return nil
	}
	a.bundle.Coordinators = cos
	return a.writeBundle()
}

func newCoordinatorsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "coordinators",
		Short: "List, add and remove the cluster's coordinators",
		Long: `The coordinators of a cluster share its records in etcd (fabricd
--store etcd://...); every one serves the nodes, which fail over between
them, and the admin bundle lists them all, so the CLI fails over too.`,
	}
	cmd.AddCommand(newCoordinatorsListCmd(), newCoordinatorsAddCmd(), newCoordinatorsRemoveCmd())
	return cmd
}

func newCoordinatorsListCmd() *cobra.Command {
	var adminDir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the coordinators (and remember them in the admin bundle)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			admin, cluster, err := adminCluster(ctx, adminDir)
			if err != nil {
				return err
			}
			if err := admin.rememberCoordinators(cluster); err != nil {
				return err
			}
			return printCoordinators(cmd.OutOrStdout(), cluster)
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

func newCoordinatorsAddCmd() *cobra.Command {
	var adminDir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "add IP:PORT",
		Short: "Make the fabricd at IP:PORT another coordinator of the cluster",
		Long: `add makes the fabricd at IP:PORT (started with the cluster's bootstrap key
and the same --store etcd://... as the coordinators) another coordinator:
it gets a VPN IP, serves the nodes, and the admin bundle lists it. A
cluster whose records are in a coordinator's own bbolt file cannot have a
second coordinator: the error says how to move it to etcd.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			endpoint, err := parseEndpoint("the coordinator's endpoint", args[0])
			if err != nil {
				return err
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
			client, err := admin.dial()
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.AddCoordinator(ctx, &pubapipb.AddCoordinatorRequest{PublicEndpoint: endpoint})
			if err != nil {
				return rpcError("adding coordinator "+endpoint, err)
			}
			co := resp.GetCoordinator()
			fmt.Fprintf(cmd.OutOrStdout(), "coordinator %s is up at VPN IP %s (%s)\n", co.GetName(), co.GetVpnIp(), co.GetPublicEndpoint())
			st, err := client.GetState(ctx, &pubapipb.GetStateRequest{})
			if err != nil {
				return rpcError("reading the cluster", err)
			}
			return admin.rememberCoordinators(st.GetCluster())
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, activationBaseTimeout, "give up after this long")
	return cmd
}

func newCoordinatorsRemoveCmd() *cobra.Command {
	var adminDir string
	var yes bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "remove NAME|VPN-IP|IP:PORT",
		Short: "Remove a coordinator (not the last one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			admin, cluster, err := adminCluster(ctx, adminDir)
			if err != nil {
				return err
			}
			target := findCoordinator(cluster, args[0])
			if target == nil {
				return usagef("%s is no coordinator of cluster %s (see fabric coordinators list)", args[0], cluster.GetClusterId())
			}
			if !yes {
				return usagef("removing coordinator %s (%s) takes it out of the cluster; run again with --yes", target.GetName(), target.GetVpnIp())
			}
			client, err := admin.dial()
			if err != nil {
				return err
			}
			defer client.Close()
			if _, err := client.RemoveNode(ctx, &pubapipb.RemoveNodeRequest{Node: target.GetVpnIp()}); err != nil {
				return rpcError("removing coordinator "+target.GetName(), err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "coordinator %s (%s) removed\n", target.GetName(), target.GetVpnIp())
			st, err := client.GetState(ctx, &pubapipb.GetStateRequest{})
			if err != nil {
				return rpcError("reading the cluster", err)
			}
			return admin.rememberCoordinators(st.GetCluster())
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask; remove")
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

func findCoordinator(cluster *pubapipb.ClusterStatus, target string) *pubapipb.Peer {
	for _, p := range cluster.GetPeers() {
		if p.GetRole() == "coordinator" && p.GetState() == "active" &&
			(p.GetName() == target || p.GetVpnIp() == target || p.GetPublicEndpoint() == target) {
			return p
		}
	}
	return nil
}

// adminCluster opens the admin bundle and reads the cluster through a
// coordinator that answers.
func adminCluster(ctx context.Context, dir string) (*adminDir, *pubapipb.ClusterStatus, error) {
	admin, err := openAdminDir(dir)
	if err != nil {
		return nil, nil, err
	}
	client, err := admin.dial()
	if err != nil {
		return nil, nil, err
	}
	defer client.Close()
	st, err := client.GetState(ctx, &pubapipb.GetStateRequest{})
	if err != nil {
		return nil, nil, rpcError("reading the cluster", err)
	}
	if st.GetCluster() == nil {
		return nil, nil, fmt.Errorf("the coordinator is %s and reports no cluster: %s", st.GetState(), st.GetFailure())
	}
	return admin, st.GetCluster(), nil
}

func printCoordinators(out io.Writer, cluster *pubapipb.ClusterStatus) error {
	watchers := map[string]int{}
	for _, p := range cluster.GetPeers() {
		if w := p.GetWatching(); w != "" && p.GetRole() != "coordinator" {
			watchers[w]++
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVPN IP\tPUBLIC ENDPOINT\tSTATE\tONLINE\tWATCHERS")
	for _, p := range cluster.GetPeers() {
		if p.GetRole() == "coordinator" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", p.GetName(), p.GetVpnIp(), p.GetPublicEndpoint(), p.GetState(), yesNo(p.GetOnline()), watchers[p.GetName()])
		}
	}
	return tw.Flush()
}
