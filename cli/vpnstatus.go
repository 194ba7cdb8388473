package cli

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fabricmesh/fabric/internal/netmgr"
	"github.com/spf13/cobra"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func newVPNStatusCmd() *cobra.Command {
	var adminDir, output string
	cmd := &cobra.Command{
		Use:   "status [-o table|json]",
		Short: "Show the VPN interface, its peers with their handshakes, and the revision applied",
		Long: `status shows what 'fabric vpn up' keeps: the interface, the coordinator it
follows and the cluster revision it applied, and each peer with its endpoint
and the age of its last handshake. It exits 1 when the VPN is not up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			dir, err := osEnvironment.findAdminDir(adminDir)
			if err != nil {
				return err
			}
			report, err := vpnStatusOf(dir, time.Now())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(report); err != nil {
					return err
				}
			} else {
				printVPNStatus(cmd.OutOrStdout(), report)
			}
			if !report.Up {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// vpnStatus is what `fabric vpn status` reports.
type vpnStatus struct {
	Up bool `json:"up"`
	// Problem says why the VPN is down, or what cannot be read.
	Problem string         `json:"problem,omitempty"`
	State   *vpnState      `json:"state,omitempty"`
	Peers   []vpnLivePeer  `json:"peers"`
	Extra   []vpnLivePeer  `json:"unknownPeers,omitempty"`
	Device  *vpnDeviceInfo `json:"device,omitempty"`
}

type vpnDeviceInfo struct {
	PublicKey  string `json:"publicKey"`
	ListenPort int    `json:"listenPort"`
}

// vpnLivePeer is a peer of the state with what the interface says of it.
type vpnLivePeer struct {
	vpnStatePeer
	// LiveEndpoint is the endpoint the interface sends to now.
	LiveEndpoint string `json:"liveEndpoint,omitempty"`
	// LastHandshake is RFC 3339, empty when there was none;
	// HandshakeAgeMs is -1 then.
	LastHandshake  string `json:"lastHandshake,omitempty"`
	HandshakeAgeMs int64  `json:"handshakeAgeMs"`
	ReceivedBytes  int64  `json:"receivedBytes"`
	SentBytes      int64  `json:"sentBytes"`
	OnInterface    bool   `json:"onInterface"`
}

// vpnStatusOf reads the daemon's state and its interface.
func vpnStatusOf(dir string, now time.Time) (vpnStatus, error) {
	pid, err := runningVPN(dir)
	if err != nil {
		return vpnStatus{}, err
	}
	st, stErr := readVPNState(dir)
	switch {
	case pid == 0 && errors.Is(stErr, fs.ErrNotExist):
		return vpnStatus{Problem: "fabric vpn is down", Peers: []vpnLivePeer{}}, nil
	case pid == 0:
		return vpnStatus{Problem: "fabric vpn is down: its daemon ended without cleaning up ('fabric vpn down' removes what it left)", Peers: []vpnLivePeer{}}, nil
	case stErr != nil:
		return vpnStatus{Up: true, Problem: fmt.Sprintf("the daemon (pid %d) has no state yet: %v", pid, stErr), Peers: []vpnLivePeer{}}, nil
	}
	report := vpnStatus{Up: true, State: &st}
	dev, err := readDevice(st.Interface)
	if err != nil {
		report.Problem = "cannot read the interface: " + err.Error()
	}
	report.Peers, report.Extra = livePeers(st.Peers, dev, now)
	if dev != nil {
		report.Device = &vpnDeviceInfo{PublicKey: dev.PublicKey.String(), ListenPort: dev.ListenPort}
	}
	return report, nil
}

func printVPNStatus(out io.Writer, r vpnStatus) {
	if r.State == nil {
		fmt.Fprintln(out, r.Problem)
		return
	}
	st := r.State
	fmt.Fprintf(out, "fabric vpn is up (pid %d, since %s)\ninterface %s (%s) at %s, listening on %d, endpoint told to the cluster: %s\n",
		st.PID, st.StartedAt.Format(time.RFC3339), st.Interface, backendName(st.Backend), st.AdminVPNIP, st.ListenPort, cmp.Or(st.WGEndpoint, "none (roaming)"))
	if st.Coordinator != "" {
		fmt.Fprintf(out, "following coordinator %s, revision %d applied\n", st.Coordinator, st.Revision)
	} else {
		fmt.Fprintf(out, "not watching a coordinator (revision %d applied): %s\n", st.Revision, cmp.Or(st.LastError, "connecting"))
	}
	if r.Problem != "" {
		fmt.Fprintln(out, r.Problem)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tVPN IP\tENDPOINT\tHANDSHAKE\tRECEIVED\tSENT")
	for _, p := range append(r.Peers, r.Extra...) {
		hs := "never"
		if p.HandshakeAgeMs >= 0 {
			hs = (time.Duration(p.HandshakeAgeMs) * time.Millisecond).Round(time.Second).String() + " ago"
		}
		if !p.OnInterface {
			hs = "not on the interface"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", cmp.Or(p.Name, "?"), cmp.Or(p.Role, "?"), cmp.Or(p.VPNIP, "?"),
			cmp.Or(p.LiveEndpoint, cmp.Or(p.WGEndpoint, "-")), hs, p.ReceivedBytes, p.SentBytes)
	}
	tw.Flush()
}

// readDevice reads the interface (nil when it cannot be read).
func readDevice(iface string) (*wgtypes.Device, error) {
	m, err := netmgr.New(netmgr.Config{InterfaceName: iface})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.Device()
}

// livePeers joins the peers of the state with the interface's (dev may be
// nil): the state's in its order, then those only on the interface.
func livePeers(peers []vpnStatePeer, dev *wgtypes.Device, now time.Time) (known, extra []vpnLivePeer) {
	live := map[string]wgtypes.Peer{}
	if dev != nil {
		for _, p := range dev.Peers {
			live[p.PublicKey.String()] = p
		}
	}
	known = []vpnLivePeer{}
	for _, sp := range peers {
		p := vpnLivePeer{vpnStatePeer: sp, HandshakeAgeMs: -1}
		if lp, ok := live[sp.WGPubKey]; ok {
			p.fill(lp, now)
			delete(live, sp.WGPubKey)
		}
		known = append(known, p)
	}
	for key, lp := range live {
		p := vpnLivePeer{vpnStatePeer: vpnStatePeer{WGPubKey: key}, HandshakeAgeMs: -1}
		p.fill(lp, now)
		extra = append(extra, p)
	}
	slices.SortFunc(extra, func(a, b vpnLivePeer) int { return strings.Compare(a.WGPubKey, b.WGPubKey) })
	return known, extra
}

// fill sets what the interface says of the peer.
func (p *vpnLivePeer) fill(lp wgtypes.Peer, now time.Time) {
	p.OnInterface = true
	if lp.Endpoint != nil {
		p.LiveEndpoint = lp.Endpoint.String()
	}
	if !lp.LastHandshakeTime.IsZero() {
		p.LastHandshake = lp.LastHandshakeTime.UTC().Format(time.RFC3339)
		p.HandshakeAgeMs = max(0, now.Sub(lp.LastHandshakeTime).Milliseconds())
	}
	p.ReceivedBytes, p.SentBytes = lp.ReceiveBytes, lp.TransmitBytes
}
