package nshost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/node/usermgr/usermgrtest"
)

// FabricConfig configures a fabric cluster on a Lab.
type FabricConfig struct {
	// BinDir holds the fabric and fabricd binaries (see BuildBinaries).
	BinDir string
	// VPNCIDR of the cluster (default 203.0.113.0/24).
	VPNCIDR string
	// PubPort is every fabricd's pubapi port (default 7443).
	PubPort int
	// LogLevel of fabricd (default info).
	LogLevel string
}

// Fabric is a fabric cluster on a Lab: an admin host that runs the CLI and
// peer hosts that run fabricd.
type Fabric struct {
	Lab   *Lab
	Admin *Host
	// AdminDir is the admin bundle's directory (on the admin host).
	AdminDir string
	// KeyFile is the bootstrap key, made by `fabric key` on the admin host.
	KeyFile string

	cfg     FabricConfig
	mu      sync.Mutex
	daemons map[*Host]*Process
	peers   map[*Host]PeerOptions
}

// PeerOptions are a peer host's fabricd flags.
type PeerOptions struct {
	// Name defaults to the host's name.
	Name string
	// Horde defaults to fabricd's default.
	Horde string
	// KeyFile replaces the cluster's bootstrap key file (a peer started
	// with another cluster's key).
	KeyFile string
	// Env is added to fabricd's environment (e.g. FABRIC_CRASH_AT).
	Env []string
	// StateDir replaces <host dir>/state (e.g. a small file system).
	StateDir string
	// Store is fabricd's --store (e.g. an etcdlab Cluster's URL: the
	// coordinators of a cluster on etcd); empty: the default, bolt.
	Store string
}

// NewFabric adds the admin host to lab and makes the bootstrap key there.
func NewFabric(ctx context.Context, lab *Lab, cfg FabricConfig) (*Fabric, error) {
	if cfg.VPNCIDR == "" {
		cfg.VPNCIDR = "203.0.113.0/24"
	}
	if cfg.PubPort == 0 {
		cfg.PubPort = 7443
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	for _, bin := range []string{"fabric", "fabricd"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("fabric binaries: %w (run make build)", err)
		}
	}
	admin, err := lab.AddHost(ctx, "admin")
	if err != nil {
		return nil, err
	}
	f := &Fabric{
		Lab: lab, Admin: admin, cfg: cfg,
		AdminDir: filepath.Join(admin.Dir(), "fabric-admin"),
		KeyFile:  filepath.Join(admin.Dir(), "bootstrap.key"),
		daemons:  map[*Host]*Process{}, peers: map[*Host]PeerOptions{},
	}
	if _, err := f.CLI(ctx, "key", "--out", f.KeyFile); err != nil {
		return nil, err
	}
	return f, nil
}

// BuildBinaries builds fabric and fabricd of the module containing the
// working directory into dir, and wireguard-go (for AdminVPNUp).
func BuildBinaries(ctx context.Context, dir string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("finding the module: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	for _, args := range [][]string{
		{"build", "-o", dir + "/", "./cmd/fabric", "./cmd/fabricd"},
		{"build", "-o", dir + "/wireguard-go", "golang.zx2c4.com/wireguard"},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// AddPeers adds n hosts to the lab and starts fabricd on each; opts gives
// each host's options (nil: defaults).
func (f *Fabric) AddPeers(ctx context.Context, n int, namef func(i int) string, opts func(i int) PeerOptions) ([]*Host, error) {
	hosts, err := f.Lab.AddHosts(ctx, n, namef)
	if err != nil {
		return nil, err
	}
	err = forEach(len(hosts), func(i int) error {
		o := PeerOptions{}
		if opts != nil {
			o = opts(i)
		}
		f.mu.Lock()
		f.peers[hosts[i]] = o
		f.mu.Unlock()
		return f.StartFabricd(ctx, hosts[i])
	})
	return hosts, err
}

// Endpoint is the pubapi endpoint of h.
func (f *Fabric) Endpoint(h *Host) string {
	return netip.AddrPortFrom(h.IP(), uint16(f.cfg.PubPort)).String()
}

// Endpoints joins the pubapi endpoints of hosts with commas.
func (f *Fabric) Endpoints(hosts []*Host) string {
	eps := make([]string, len(hosts))
	for i, h := range hosts {
		eps[i] = f.Endpoint(h)
	}
	return strings.Join(eps, ",")
}

// SetPeerOptions changes h's fabricd options for its next start.
func (f *Fabric) SetPeerOptions(h *Host, o PeerOptions) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[h] = o
}

// StartFabricd starts (or restarts) fabricd on h with its state in
// h.Dir()/state and waits until its pubapi accepts connections. On a VM it
// starts the fabricd service (systemctl start fabricd).
func (f *Fabric) StartFabricd(ctx context.Context, h *Host) error {
	if h.vm != nil {
		if _, err := h.Run(ctx, "systemctl", "start", "fabricd"); err != nil {
			return err
		}
		return f.waitListening(ctx, h, h.QemuProcess())
	}
	f.mu.Lock()
	o := f.peers[h]
	running := f.daemons[h]
	f.mu.Unlock()
	if running != nil {
		select {
		case <-running.Exited():
		default:
			return fmt.Errorf("fabricd is already running on %s (pid %d)", h.Name(), running.PID())
		}
	}
	if o.Name == "" {
		o.Name = h.Name()
	}
	if o.KeyFile == "" {
		o.KeyFile = f.KeyFile
	}
	// The hosts share the machine's file system: each manages the SSH
	// users of its own throwaway root, never the machine's accounts.
	usersRoot := f.UsersRoot(h)
	if err := usermgrtest.SeedRoot(usersRoot); err != nil {
		return fmt.Errorf("preparing the SSH users' root of %s: %w", h.Name(), err)
	}
	// --config /dev/null: the hosts share the machine's file system, and
	// the machine's /etc/fabric/fabricd.yaml is not theirs.
	args := []string{
		"--config", "/dev/null",
		"--state-dir", f.StateDir(h), "--listen", f.Endpoint(h),
		"--bootstrap-key-file", o.KeyFile, "--name", o.Name, "--log-level", f.cfg.LogLevel,
		"--ssh-users-root", usersRoot,
	}
	if o.Horde != "" {
		args = append(args, "--horde", o.Horde)
	}
	if o.Store != "" {
		args = append(args, "--store", o.Store)
	}
	p, err := h.StartEnv(o.Env, filepath.Join(f.cfg.BinDir, "fabricd"), args...)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.daemons[h] = p
	f.mu.Unlock()
	return f.waitListening(ctx, h, p)
}

// StateDir is h's fabricd state directory.
func (f *Fabric) StateDir(h *Host) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.peers[h].StateDir; d != "" {
		return d
	}
	return filepath.Join(h.Dir(), "state")
}

// PeerOptions returns h's fabricd options.
func (f *Fabric) PeerOptions(h *Host) PeerOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers[h]
}

// StartCLI starts the fabric CLI on the admin host in the background, so
// that a test can interrupt or kill it; its output is in the admin host's
// fabric.log.
func (f *Fabric) StartCLI(args ...string) (*Process, error) {
	return f.Admin.Start(filepath.Join(f.cfg.BinDir, "fabric"), args...)
}

// ActivateArgs are the arguments of `fabric activate` with coordinator and
// nodes (see Activate).
func (f *Fabric) ActivateArgs(coordinator *Host, nodes []*Host) []string {
	return []string{"activate", "--coordinator", f.Endpoint(coordinator), "--nodes", f.Endpoints(nodes),
		"--bootstrap-key-file", f.KeyFile, "--vpn-cidr", f.cfg.VPNCIDR, "--admin-dir", f.AdminDir}
}

// VPNAddr is the address of h's fabric0 (the VPN IP h holds itself), or
// the zero address if it has none.
func (f *Fabric) VPNAddr(ctx context.Context, h *Host) (netip.Addr, error) {
	out, err := h.Run(ctx, "ip", "-o", "addr", "show", "dev", "fabric0")
	if err != nil {
		if strings.Contains(out, "does not exist") {
			return netip.Addr{}, nil
		}
		return netip.Addr{}, err
	}
	for _, field := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(field); err == nil {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, nil
}

// UsersRoot is the directory whose etc/passwd and home directories h's
// fabricd manages the SSH users in (fabricd --ssh-users-root).
func (f *Fabric) UsersRoot(h *Host) string { return filepath.Join(h.Dir(), "users-root") }

// WaitFabricd waits until h's fabricd serves its pubapi: on a VM, while its
// qemu runs (e.g. after Host.Reboot, which returns once ssh answers).
func (f *Fabric) WaitFabricd(ctx context.Context, h *Host) error {
	p := h.QemuProcess()
	if p == nil {
		if p = f.Daemon(h); p == nil {
			return fmt.Errorf("no fabricd on %s", h.Name())
		}
	}
	return f.waitListening(ctx, h, p)
}

// waitListening polls h's pubapi port from the admin host while p (fabricd,
// or a VM's qemu) runs.
func (f *Fabric) waitListening(ctx context.Context, h *Host, p *Process) error {
	timeout, interval, what, logs := 20*time.Second, 50*time.Millisecond, "fabricd", "log "+p.LogPath()
	if h.vm != nil {
		timeout, interval, what, logs = vmBootTimeout, 500*time.Millisecond, "the VM", "console "+h.vm.console
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	probe := fmt.Sprintf(": > /dev/tcp/%s/%d", h.IP(), f.cfg.PubPort)
	for {
		if _, err := f.Admin.Run(ctx, "bash", "-c", probe); err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s on %s exited: %v (%s)", what, h.Name(), p.Err(), logs)
		case <-ctx.Done():
			return fmt.Errorf("fabricd on %s does not listen on %s: %w (%s)", h.Name(), f.Endpoint(h), ctx.Err(), logs)
		case <-time.After(interval):
		}
	}
}

// Daemon returns the fabricd process of h, if started.
func (f *Fabric) Daemon(h *Host) *Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.daemons[h]
}

// StopFabricd stops h's fabricd gracefully (on a VM: systemctl stop
// fabricd).
func (f *Fabric) StopFabricd(ctx context.Context, h *Host) error {
	if h.vm != nil {
		_, err := h.Run(ctx, "systemctl", "stop", "fabricd")
		return err
	}
	p := f.Daemon(h)
	if p == nil {
		return fmt.Errorf("no fabricd on %s", h.Name())
	}
	return p.Stop(ctx)
}

// CLI runs the fabric CLI on the admin host.
func (f *Fabric) CLI(ctx context.Context, args ...string) (string, error) {
	return f.Admin.Run(ctx, filepath.Join(f.cfg.BinDir, "fabric"), args...)
}

// Activate runs `fabric activate` with coordinator and nodes, and extra
// flags (e.g. --users FILE).
func (f *Fabric) Activate(ctx context.Context, coordinator *Host, nodes []*Host, extra ...string) (string, error) {
	return f.CLI(ctx, append(f.ActivateArgs(coordinator, nodes), extra...)...)
}

// AddNodes runs `fabric add-nodes`.
func (f *Fabric) AddNodes(ctx context.Context, nodes []*Host) (string, error) {
	return f.CLI(ctx, "add-nodes", "--nodes", f.Endpoints(nodes), "--admin-dir", f.AdminDir)
}

// Watch runs `fabric watch --n n`, with --services if any are given.
func (f *Fabric) Watch(ctx context.Context, n int, timeout time.Duration, services ...string) (string, error) {
	args := []string{"watch", "--n", strconv.Itoa(n), "--timeout", timeout.String(), "--admin-dir", f.AdminDir}
	if len(services) > 0 {
		args = append(args, "--services", strings.Join(services, ","))
	}
	return f.CLI(ctx, args...)
}

// Status runs `fabric status -o json`.
func (f *Fabric) Status(ctx context.Context) (clusterstatus.Status, error) {
	out, err := f.CLI(ctx, "status", "-o", "json", "--admin-dir", f.AdminDir)
	if err != nil {
		return clusterstatus.Status{}, err
	}
	var st clusterstatus.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return clusterstatus.Status{}, fmt.Errorf("parsing status: %w: %s", err, out)
	}
	return st, nil
}

// CheckMesh proves the mesh among hosts from the cluster status: on every
// host, `wg show fabric0` shows that host's own key and exactly the other
// active peers (admin included), and every host pings every active peer's
// VPN IP through the tunnel.
func (f *Fabric) CheckMesh(ctx context.Context, hosts []*Host) error {
	return f.CheckMeshWithout(ctx, hosts)
}

// CheckMeshWithout is CheckMesh while the peers of down are down (a
// killed coordinator): every host still has their keys, but none is
// pinged.
func (f *Fabric) CheckMeshWithout(ctx context.Context, hosts []*Host, down ...*Host) error {
	st, err := f.Status(ctx)
	if err != nil {
		return err
	}
	isDown := map[string]bool{}
	for _, h := range down {
		isDown[f.peerName(h)] = true
	}
	byName := map[string]clusterstatus.Peer{}
	var vpnIPs []string
	for _, p := range st.Peers {
		if p.State == "active" {
			byName[p.Name] = p
			if !isDown[p.Name] {
				vpnIPs = append(vpnIPs, p.VPNIP)
			}
		}
	}
	var allKeys []string
	for _, p := range append(slices.Clone(st.Peers), st.Admins...) {
		if p.State == "active" {
			allKeys = append(allKeys, p.WGPubKey)
		}
	}
	var mu sync.Mutex
	var errs []error
	_ = forEach(len(hosts), func(i int) error {
		h := hosts[i]
		self, ok := byName[f.peerName(h)]
		err := errors.New("not an active peer in the status")
		if ok {
			err = f.checkHost(ctx, h, self, allKeys, vpnIPs)
		}
		if err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w", h.Name(), err))
			mu.Unlock()
		}
		return nil
	})
	return errors.Join(errs...)
}

func (f *Fabric) peerName(h *Host) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.peers[h].Name; n != "" {
		return n
	}
	return h.Name()
}

func (f *Fabric) checkHost(ctx context.Context, h *Host, self clusterstatus.Peer, allKeys, vpnIPs []string) error {
	pub, err := h.Run(ctx, "wg", "show", "fabric0", "public-key")
	if err != nil {
		return err
	}
	if strings.TrimSpace(pub) != self.WGPubKey {
		return fmt.Errorf("wg show fabric0 shows key %s, want this host's %s", strings.TrimSpace(pub), self.WGPubKey)
	}
	out, err := h.Run(ctx, "wg", "show", "fabric0", "peers")
	if err != nil {
		return err
	}
	got := strings.Fields(out)
	want := slices.DeleteFunc(slices.Clone(allKeys), func(k string) bool { return k == self.WGPubKey })
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("wg show fabric0 peers: got %d %v, want %d %v", len(got), got, len(want), want)
	}
	if err := PingAll(ctx, h, vpnIPs); err != nil {
		wg, _ := h.Run(ctx, "wg", "show", "fabric0", "latest-handshakes")
		return fmt.Errorf("%w; wg show fabric0 latest-handshakes:\n%s", err, wg)
	}
	return nil
}

// WaitMesh repeats CheckMeshWithout until it passes, for a mesh that is
// still forming, and returns how long that took; at timeout, the last
// error.
func (f *Fabric) WaitMesh(ctx context.Context, timeout time.Duration, hosts []*Host, down ...*Host) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := f.CheckMeshWithout(ctx, hosts, down...)
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), err
		case <-time.After(time.Second):
		}
	}
}

// PingAll pings every ip from h at once and names those that do not answer.
func PingAll(ctx context.Context, h *Host, ips []string) error {
	script := `for ip in "$@"; do (ping -c 1 -i 0.2 -w 5 -q "$ip" >/dev/null 2>&1 || echo "$ip") & done; wait`
	out, err := h.Run(ctx, "sh", append([]string{"-c", script, "ping-all"}, ips...)...)
	if err != nil {
		return err
	}
	if failed := strings.Fields(out); len(failed) > 0 {
		return fmt.Errorf("no ping reply from %s", strings.Join(failed, ", "))
	}
	return nil
}

// adminVPNShim is wg-quick's userspace implementation for the admin host:
// it runs wireguard-go in the foreground in the background, records its PID
// (so the lab can stop exactly that process) and waits for its UAPI socket.
const adminVPNShim = `#!/bin/sh
WG_PROCESS_FOREGROUND=1 "$FABRIC_WIREGUARD_GO" "$1" >>"$FABRIC_WG_LOG" 2>&1 &
echo $! >"$FABRIC_WG_PIDFILE"
i=0
while [ ! -S "/var/run/wireguard/$1.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
`

// AdminVPNUp puts the admin host on the VPN with the admin bundle's wg-quick
// config, exactly as an operator would (`wg-quick up`), using wireguard-go
// from BinDir. The lab stops that wireguard-go when it closes.
func (f *Fabric) AdminVPNUp(ctx context.Context) error {
	shim := filepath.Join(f.Admin.Dir(), "wireguard-go-shim")
	pidFile := filepath.Join(f.Admin.Dir(), "wireguard-go.pid")
	if err := os.WriteFile(shim, []byte(adminVPNShim), 0o755); err != nil {
		return err
	}
	cmd := f.Admin.Command(ctx, "wg-quick", "up", filepath.Join(f.AdminDir, "fabric-vpn.conf"))
	cmd.Env = append(os.Environ(),
		"WG_QUICK_USERSPACE_IMPLEMENTATION="+shim,
		"FABRIC_WIREGUARD_GO="+filepath.Join(f.cfg.BinDir, "wireguard-go"),
		"FABRIC_WG_LOG="+filepath.Join(f.Admin.Dir(), "wireguard-go.log"),
		"FABRIC_WG_PIDFILE="+pidFile,
	)
	out, err := cmd.CombinedOutput()
	if data, rerr := os.ReadFile(pidFile); rerr == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); perr == nil {
			f.Lab.OnClose(func() error { return killOwn(pid, "wireguard-go") })
		}
	}
	if err != nil {
		return fmt.Errorf("wg-quick up on %s: %w: %s", f.Admin.Name(), err, out)
	}
	return nil
}

// AdminVPNDaemonUp puts the admin host on the VPN with `fabric vpn up`
// (extra adds flags) and returns its output. The lab kills the daemon, if
// it still runs, when it closes.
func (f *Fabric) AdminVPNDaemonUp(ctx context.Context, extra ...string) (string, error) {
	out, err := f.CLI(ctx, append([]string{"vpn", "up", "--admin-dir", f.AdminDir}, extra...)...)
	if data, rerr := os.ReadFile(filepath.Join(f.AdminDir, "vpn.pid")); rerr == nil {
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); perr == nil {
			f.Lab.OnClose(func() error { return killOwn(pid, "vpn\x00up\x00--foreground") })
		}
	}
	return out, err
}

// AdminVPNDaemonDown runs `fabric vpn down` on the admin host.
func (f *Fabric) AdminVPNDaemonDown(ctx context.Context) (string, error) {
	return f.CLI(ctx, "vpn", "down", "--admin-dir", f.AdminDir)
}

// killOwn kills pid if it still runs the command we started (a recycled PID
// belongs to someone else and is left alone).
func killOwn(pid int, command string) error {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), command) {
		return nil
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	return p.Kill()
}
