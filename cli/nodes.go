package cli

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// console is where a command asks the operator before it does something
// that cannot be undone.
type console struct {
	in io.Reader
	// interactive: in is a terminal, so someone can answer.
	interactive bool
}

// stdinConsole is the process's standard input.
func stdinConsole() console {
	_, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS)
	return console{in: os.Stdin, interactive: err == nil}
}

// confirm prints question to out and reads the answer: true for y or yes.
func (c console) confirm(out io.Writer, question string) (bool, error) {
	fmt.Fprintf(out, "%s [y/N] ", question)
	line, err := bufio.NewReader(c.in).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(out)
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("reading the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// confirmRemoval asks whether to remove the node desc describes; an
// error (exit code 1) unless the operator says yes.
func (c console) confirmRemoval(out io.Writer, desc string) error {
	ok, err := c.confirm(out, fmt.Sprintf("Remove node %s? Its VPN IP is retired and its keys are refused from then on.", desc))
	switch {
	case err != nil:
		return err
	case !ok:
		return &exitError{code: 1, msg: "not removed: the removal was not confirmed"}
	}
	return nil
}

func newNodesCmd(con console) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "Remove nodes from the cluster",
	}
	cmd.AddCommand(newNodesRemoveCmd(con))
	return cmd
}

func newNodesRemoveCmd(con console) *cobra.Command {
	var (
		adminDir string
		yes      bool
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "remove NAME|VPN-IP|IP:PORT [--yes]",
		Short: "Remove a node (active, pending or failed) from the cluster",
		Long: `remove takes a node out of the cluster in one revision: it leaves every
peer's WireGuard configuration, every whitelist, endpoint list and service
catalog; its VPN IP is retired (never given again) and its WireGuard,
signing and service keys are refused from then on. If the machine is
reachable it is told to leave: it drops its interface and its cluster and
returns to accepting-init with a new identity, so 'fabric add-nodes' can
add it again later.

The node is named by its name, its VPN IP or its public endpoint IP:PORT.
Failed and pending rows (a mistyped endpoint, a machine that never
answered) are removed the same way. remove asks for confirmation on the
terminal; --yes skips the question, and without a terminal --yes is
required. The admin's fabric-vpn.conf is rewritten without the node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			if err := checkNodeTarget(target); err != nil {
				return err
			}
			if !yes && !con.interactive {
				return usagef("removing node %s cannot be undone and needs confirmation, but standard input is not a terminal: run again with --yes", target)
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
			st, err := client.GetState(ctx, &pubapipb.GetStateRequest{})
			if err != nil {
				return rpcError("reading the cluster", err)
			}
			if st.GetCluster() == nil {
				return fmt.Errorf("the coordinator is %s and reports no cluster: %s", st.GetState(), st.GetFailure())
			}
			node, err := findNodeRow(st.GetCluster(), target)
			if err != nil {
				return err
			}
			desc := describeRow(node)
			if !yes {
				if err := con.confirmRemoval(cmd.ErrOrStderr(), desc); err != nil {
					return err
				}
			}
			// By VPN IP: never reused, so exactly the row shown.
			resp, err := client.RemoveNode(ctx, &pubapipb.RemoveNodeRequest{Node: node.GetVpnIp()})
			if err != nil {
				return rpcError("removing node "+desc, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "removed node %s at revision %d\n", desc, resp.GetRevision())
			switch {
			case resp.GetTold():
				fmt.Fprintln(out, "the machine was told to leave: it drops its interface and returns to accepting-init with a new identity")
			case node.GetState() == "active":
				fmt.Fprintf(out, "the machine was not reached (%s); it leaves when it next hears from a coordinator, and a machine that is gone needs nothing more\n",
					cmp.Or(resp.GetToldError(), "no reason given"))
			default:
				fmt.Fprintf(out, "the row was %s: no machine had joined, so none was told to leave\n", node.GetState())
			}
			after, err := client.GetState(ctx, &pubapipb.GetStateRequest{})
			if err != nil {
				return rpcError("reading the cluster after the removal (fabric-vpn.conf not rewritten)", err)
			}
			if err := admin.writeWGQuick(after.GetCluster()); err != nil {
				return err
			}
			fmt.Fprintf(out, "rewrote %s ('fabric vpn up' follows the cluster on its own); a wg-quick interface loads it with: bash -c 'wg syncconf fabric-vpn <(wg-quick strip %s)'\n",
				admin.file(wgQuickFile), admin.file(wgQuickFile))
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "remove without asking")
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

// checkNodeTarget refuses what can be neither a name, a VPN IP nor an
// endpoint IP:PORT.
func checkNodeTarget(target string) error {
	if strings.TrimSpace(target) == "" {
		return usagef("give the node's name, VPN IP or public endpoint IP:PORT")
	}
	if strings.Contains(target, ":") {
		if _, err := netip.ParseAddrPort(target); err != nil {
			if _, err := netip.ParseAddr(target); err != nil {
				return usagef("%q is not an endpoint IP:PORT nor a VPN IP", target)
			}
		}
	}
	return nil
}

// findNodeRow finds the node row that target names: its name, VPN IP or
// public endpoint. A coordinator or an admin is refused, and so is a name
// that several rows have.
func findNodeRow(cluster *pubapipb.ClusterStatus, target string) (*pubapipb.Peer, error) {
	var found []*pubapipb.Peer
	for _, p := range cluster.GetPeers() {
		if p.GetName() == target || p.GetVpnIp() == target || (p.GetPublicEndpoint() != "" && p.GetPublicEndpoint() == target) {
			found = append(found, p)
		}
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("no node of cluster %s is named %s or has it as VPN IP or public endpoint (see fabric status)", cluster.GetClusterId(), target)
	case len(found) > 1:
		var rows []string
		for _, p := range found {
			rows = append(rows, describeRow(p))
		}
		return nil, usagef("%d rows match %s: %s; give the VPN IP of the one to remove", len(found), target, strings.Join(rows, "; "))
	}
	switch p := found[0]; p.GetRole() {
	case "node":
		return p, nil
	case "coordinator":
		return nil, usagef("%s is a coordinator: use fabric coordinators remove", describeRow(p))
	case "admin":
		return nil, usagef("%s is an admin, not a node", describeRow(p))
	default:
		return nil, usagef("%s has role %s, not node", describeRow(p), p.GetRole())
	}
}

// describeRow names a row for the operator: "h3 (VPN IP 203.0.113.4,
// 198.51.100.13:7443, active)".
func describeRow(p *pubapipb.Peer) string {
	parts := []string{"VPN IP " + p.GetVpnIp()}
	if p.GetPublicEndpoint() != "" {
		parts = append(parts, p.GetPublicEndpoint())
	}
	parts = append(parts, p.GetState())
	return fmt.Sprintf("%s (%s)", cmp.Or(p.GetName(), "(unnamed)"), strings.Join(parts, ", "))
}
