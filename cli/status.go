package cli

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
)

func statusFromProto(c *pubapipb.ClusterStatus) clusterstatus.Status {
	s := clusterstatus.Status{ClusterID: c.GetClusterId(), Revision: c.GetRevision(), VPNCIDR: c.GetVpnCidr(),
		Peers: []clusterstatus.Peer{}, Admins: []clusterstatus.Peer{}, Rules: c.GetRules()}
	for _, p := range c.GetPeers() {
		sp := clusterstatus.Peer{
			Name: p.GetName(), Role: p.GetRole(), State: p.GetState(), VPNIP: p.GetVpnIp(),
			PublicEndpoint: p.GetPublicEndpoint(), WGEndpoint: p.GetWgEndpoint(), Horde: p.GetHorde(),
			AppliedRevision: p.GetAppliedRevision(), LastError: p.GetLastError(),
			Online: p.GetOnline(), CoordinatorHandshakeAgeMs: p.GetCoordinatorHandshakeAgeMs(), Watching: p.GetWatching(),
			Registered: p.GetRegistered(), RegistrationError: p.GetRegistrationError(),
			Endpoints: servicesFromProto(p.GetEndpoints()), Clients: servicesFromProto(p.GetClients()),
		}
		if len(p.GetWgPubKey()) > 0 {
			sp.WGPubKey = base64.StdEncoding.EncodeToString(p.GetWgPubKey())
		}
		if p.GetRegisteredAt() > 0 {
			sp.RegisteredAt = time.UnixMilli(p.GetRegisteredAt()).UTC().Format("2006-01-02T15:04:05.000Z07:00")
		}
		if p.GetLastSeen() > 0 {
			sp.LastSeen = time.Unix(p.GetLastSeen(), 0).UTC().Format(time.RFC3339)
		}
		if sp.Role == "admin" {
			s.Admins = append(s.Admins, sp)
		} else {
			s.Peers = append(s.Peers, sp)
		}
	}
	return s
}

func servicesFromProto(in []*pubapipb.Service) []clusterstatus.Service {
	out := []clusterstatus.Service{}
	for _, sv := range in {
		out = append(out, clusterstatus.Service{Service: sv.GetService(), ID: sv.GetId(), Address: sv.GetAddress()})
	}
	return out
}

// fetchStatus asks a coordinator of the admin bundle (the first that
// answers) for the cluster.
func fetchStatus(ctx context.Context, admin *adminDir) (clusterstatus.Status, error) {
	client, err := admin.dial()
	if err != nil {
		return clusterstatus.Status{}, err
	}
	defer client.Close()
	resp, err := client.GetState(ctx, &pubapipb.GetStateRequest{})
	if err != nil {
		return clusterstatus.Status{}, rpcError("asking coordinator "+client.Endpoint(), err)
	}
	if resp.GetCluster() == nil {
		return clusterstatus.Status{}, fmt.Errorf("coordinator %s is %s and reports no cluster: %s",
			client.Endpoint(), resp.GetState(), resp.GetFailure())
	}
	st := statusFromProto(resp.GetCluster())
	st.CoordinatorVersion = resp.GetVersion()
	return st, nil
}

func newStatusCmd() *cobra.Command {
	return newReportCmd("status", "Show the cluster's peers as the coordinator sees them",
		func(st clusterstatus.Status) clusterstatus.Status { return st },
		func(out io.Writer, st clusterstatus.Status) { printStatus(out, st, time.Now()) })
}

// newReportCmd is a command that fetches the cluster status from the
// coordinator of the admin bundle and prints what report makes of it, as
// JSON (-o json) or with printTable.
func newReportCmd[R any](name, short string, report func(clusterstatus.Status) R, printTable func(io.Writer, R)) *cobra.Command {
	var (
		adminDir, output string
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   name + " [-o table|json]",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
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
			st, err := fetchStatus(ctx, admin)
			if err != nil {
				return err
			}
			r := report(st)
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			printTable(cmd.OutOrStdout(), r)
			return nil
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

// printStatus prints st as a table, LAST SEEN relative to now.
func printStatus(out io.Writer, st clusterstatus.Status, now time.Time) {
	fmt.Fprintf(out, "cluster %s  revision %d  vpn %s\ncoordinator fabricd %s\n\n", st.ClusterID, st.Revision, st.VPNCIDR, cmp.Or(st.CoordinatorVersion, "(version not reported)"))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSTATE\tONLINE\tLAST SEEN\tVPN IP\tPUBLIC ENDPOINT\tHORDE\tREGISTERED\tSERVICES\tAPPLIED\tNOTE")
	for _, p := range st.Peers {
		note := p.LastError
		if note == "" {
			note = p.RegistrationError
		}
		if note == "" && p.State == "active" && p.AppliedRevision != st.Revision {
			note = "catching up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d+%d\t%d\t%s\n", p.Name, p.Role, p.State, onlineWord(p.Online), lastSeen(p.LastSeen, now),
			p.VPNIP, p.PublicEndpoint, p.Horde, yesNo(p.Registered), len(p.Endpoints), len(p.Clients), p.AppliedRevision, note)
	}
	tw.Flush()
	for _, a := range st.Admins {
		on := "not following the cluster (no 'fabric vpn up')"
		if a.Online {
			on = fmt.Sprintf("on the VPN at %s, revision %d applied", cmp.Or(a.WGEndpoint, "no endpoint (roaming)"), a.AppliedRevision)
		}
		fmt.Fprintf(out, "\nadmin %s: VPN IP %s, %s\n", a.Name, a.VPNIP, on)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func onlineWord(online bool) string {
	if online {
		return "online"
	}
	return "offline"
}

// lastSeen renders an RFC 3339 time as how long before now it was ("4s
// ago", "3m10s ago"), "never" when empty, and the time itself when it
// does not parse or lies ahead of now (another machine's clock).
func lastSeen(at string, now time.Time) string {
	if at == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil || t.After(now.Add(time.Second)) {
		return at
	}
	return max(now.Sub(t), 0).Truncate(time.Second).String() + " ago"
}
