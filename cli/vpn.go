package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fabricmesh/fabric/internal/ifname"
	"github.com/fabricmesh/fabric/internal/netmgr"
	"github.com/spf13/cobra"
)

func newVPNCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vpn up|down|status",
		Short: "Put this machine on the cluster's VPN as a live peer",
		Long: `vpn puts the admin's machine on the cluster's VPN and keeps it there: 'fabric
vpn up' starts a daemon that brings up a WireGuard interface (kernel WireGuard
when the kernel has it, else wireguard-go inside the daemon) with the admin's
VPN key and VPN IP, and watches a coordinator inside the VPN as a node does,
so that nodes added, removed or re-keyed are reachable without another step.
It tells the coordinator where its peers reach it, so that a restarted node
reaches the admin at once. 'fabric vpn down' stops it and removes the
interface; 'fabric vpn status' shows the interface, its peers and the
revision applied.

The daemon's pid file (vpn.pid), state (vpn.state) and log (vpn.log) are in
the admin directory. It needs root (or CAP_NET_ADMIN); with sudo, pass
--admin-dir or keep FABRIC_ADMIN_DIR (sudo -E). The bundle's fabric-vpn.conf
works with stock wg-quick instead, as a snapshot of the peers at activation
or at the last add-nodes.`,
	}
	cmd.AddCommand(newVPNUpCmd(), newVPNDownCmd(), newVPNStatusCmd())
	return cmd
}

func newVPNUpCmd() *cobra.Command {
	var (
		adminDir   string
		opts       vpnOptions
		foreground bool
		readyFD    int
		timeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up [--foreground]",
		Short: "Bring this machine onto the VPN and keep it following the cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.check(); err != nil {
				return err
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			admin, err := openAdminDir(adminDir)
			if err != nil {
				return err
			}
			if admin.path, err = filepath.Abs(admin.path); err != nil {
				return err
			}
			if !foreground {
				return startVPNDaemon(cmd, admin, opts, timeout)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d := &vpnDaemon{admin: admin, opts: opts, log: newVPNLogger(cmd.ErrOrStderr())}
			d.ready = func(problem string) {
				if problem == "" {
					fmt.Fprintln(cmd.OutOrStdout(), describeVPN(admin.path))
				}
			}
			if readyFD > 0 {
				d.ready = readyPipe(os.NewFile(uintptr(readyFD), "ready"))
			}
			if err := d.run(ctx); err != nil && ctx.Err() == nil {
				d.report(describeUpError(err))
				return errors.New(describeUpError(err))
			}
			return nil
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	cmd.Flags().StringVar(&opts.iface, "interface", defaultVPNInterface, "name of the WireGuard interface")
	cmd.Flags().IntVar(&opts.listenPort, "listen-port", defaultVPNListenPort, "WireGuard UDP port")
	cmd.Flags().StringVar(&opts.endpoint, "endpoint", "auto",
		"where the cluster's peers reach this machine's WireGuard: auto (this machine's address toward the coordinator, at --listen-port), IP:PORT (a port forward), or none (behind NAT: peers learn it from this machine's packets)")
	cmd.Flags().StringVar(&opts.wireguard, "wireguard", string(netmgr.ModeAuto), "auto (kernel WireGuard when available, else wireguard-go), kernel or userspace")
	cmd.Flags().BoolVar(&foreground, "foreground", false, "stay in the foreground, logging to stderr, until interrupted")
	cmd.Flags().IntVar(&readyFD, "ready-fd", 0, "descriptor to report readiness on (used by the daemonizing parent)")
	_ = cmd.Flags().MarkHidden("ready-fd")
	addTimeoutFlag(cmd, &timeout, 90*time.Second, "give up if the daemon is not up after this long")
	return cmd
}

// check validates the flags of `fabric vpn up`.
func (o vpnOptions) check() error {
	if err := ifname.Validate(o.iface); err != nil {
		return usagef("--interface: %v", err)
	}
	if o.listenPort < 1 || o.listenPort > 65535 {
		return usagef("--listen-port %d: want 1 to 65535", o.listenPort)
	}
	switch netmgr.Mode(o.wireguard) {
	case netmgr.ModeAuto, netmgr.ModeKernel, netmgr.ModeUserspace:
	default:
		return usagef("--wireguard %q: want auto, kernel or userspace", o.wireguard)
	}
	if o.endpoint != "auto" && o.endpoint != "none" {
		if ap, err := netip.ParseAddrPort(o.endpoint); err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			return usagef("--endpoint %q: want auto, none or IP:PORT", o.endpoint)
		}
	}
	return nil
}

// readyPipe tells the daemonizing parent, on f, that the daemon is up or
// why it is not, and closes f.
func readyPipe(f *os.File) func(string) {
	return func(problem string) {
		msg := "ok"
		if problem != "" {
			msg = "error: " + problem
		}
		fmt.Fprintln(f, msg)
		f.Close()
	}
}

// startVPNDaemon runs `fabric vpn up --foreground` as a daemon in a session
// of its own, logging to vpn.log, and waits until it says it is up.
func startVPNDaemon(cmd *cobra.Command, admin *adminDir, opts vpnOptions, timeout time.Duration) error {
	if pid, err := runningVPN(admin.path); err != nil || pid > 0 {
		if err != nil {
			return err
		}
		return fmt.Errorf("%w (pid %d); 'fabric vpn down' first", errVPNRunning, pid)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program to start the daemon: %w", err)
	}
	logPath := admin.file(vpnLogFile)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, privateFileMode)
	if err != nil {
		return fmt.Errorf("opening the vpn log: %w", err)
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	daemon := exec.Command(exe, "vpn", "up", "--foreground", "--ready-fd", "3", "--admin-dir", admin.path,
		"--interface", opts.iface, "--listen-port", strconv.Itoa(opts.listenPort), "--endpoint", opts.endpoint, "--wireguard", opts.wireguard)
	daemon.Stdout, daemon.Stderr = logFile, logFile
	daemon.ExtraFiles = []*os.File{w}
	daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = daemon.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("starting the vpn daemon: %w", err)
	}
	_ = r.SetReadDeadline(time.Now().Add(timeout))
	answer, readErr := io.ReadAll(r)
	switch msg := strings.TrimSpace(string(answer)); {
	case msg == "ok":
		_ = daemon.Process.Release()
		fmt.Fprintln(cmd.OutOrStdout(), describeVPN(admin.path))
		return nil
	case strings.HasPrefix(msg, "error: "):
		_ = daemon.Wait()
		return fmt.Errorf("%s (log: %s)", strings.TrimPrefix(msg, "error: "), logPath)
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_ = daemon.Wait()
		return fmt.Errorf("the vpn daemon was not up after %v; stopped it (log: %s)", timeout, logPath)
	}
	err = daemon.Wait()
	return fmt.Errorf("the vpn daemon ended before it was up (%v): %s (log: %s)", err, lastLine(logPath), logPath)
}

// lastLine is the last line of the file at path, for an error message.
func lastLine(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}

// describeVPN is the line `fabric vpn up` prints once the daemon is up.
func describeVPN(dir string) string {
	st, err := readVPNState(dir)
	if err != nil {
		return "fabric vpn is up (" + err.Error() + ")"
	}
	watch := "not watching a coordinator yet"
	if st.Coordinator != "" {
		watch = fmt.Sprintf("following coordinator %s at revision %d", st.Coordinator, st.Revision)
	}
	return fmt.Sprintf("fabric vpn is up: interface %s (%s) at %s with %d peers, %s; pid %d, log %s",
		st.Interface, backendName(st.Backend), st.AdminVPNIP, len(st.Peers), watch, st.PID, filepath.Join(dir, vpnLogFile))
}

// backendName names a netmgr backend for people.
func backendName(backend string) string {
	switch backend {
	case string(netmgr.ModeUserspace):
		return "wireguard-go"
	case string(netmgr.ModeKernel):
		return "kernel wireguard"
	}
	return "backend not known yet"
}

func newVPNDownCmd() *cobra.Command {
	var (
		adminDir string
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the VPN daemon and remove its interface",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			dir, err := osEnvironment.findAdminDir(adminDir)
			if err != nil {
				return err
			}
			msg, err := vpnDown(ctx, dir)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, 15*time.Second, "give up after this long (the daemon is killed halfway)")
	return cmd
}

// vpnDown stops the daemon of dir (SIGTERM, then SIGKILL halfway to ctx's
// deadline), and removes the interface and files a daemon that did not
// stop cleanly left.
func vpnDown(ctx context.Context, dir string) (string, error) {
	pid, err := runningVPN(dir)
	if err != nil {
		return "", err
	}
	st, stErr := readVPNState(dir)
	if pid == 0 && errors.Is(stErr, fs.ErrNotExist) {
		return "fabric vpn is not up", nil
	}
	if pid > 0 {
		if err := stopDaemon(ctx, dir, pid); err != nil {
			return "", err
		}
	}
	// A daemon that stopped cleanly removed its interface and state; one
	// that was killed or crashed left them.
	if stErr == nil && st.Interface != "" {
		if exists, err := netmgr.LinkExists(st.Interface); err != nil {
			return "", err
		} else if exists {
			if err := removeInterface(ctx, st.Interface); err != nil {
				return "", err
			}
		}
	}
	os.Remove(filepath.Join(dir, vpnStateFile))
	os.Remove(filepath.Join(dir, vpnPIDFile))
	return fmt.Sprintf("fabric vpn is down (interface %s removed)", cmp.Or(st.Interface, defaultVPNInterface)), nil
}

// stopDaemon signals pid to stop and waits for it to release the pid
// file's lock: SIGTERM, then SIGKILL halfway to ctx's deadline.
func stopDaemon(ctx context.Context, dir string, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping the vpn daemon (pid %d): %w", pid, err)
	}
	kill := time.Now().Add(5 * time.Second)
	if deadline, ok := ctx.Deadline(); ok {
		kill = time.Now().Add(time.Until(deadline) / 2)
	}
	killed := false
	for {
		if running, err := runningVPN(dir); err == nil && running == 0 {
			return nil
		}
		if !killed && time.Now().After(kill) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the vpn daemon (pid %d) did not stop: %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func removeInterface(ctx context.Context, iface string) error {
	m, err := netmgr.New(netmgr.Config{InterfaceName: iface})
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Down(ctx)
}
