package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// vmDemo is `make vm-demo`: n VMs booted from the image on the bridge of a
// namespace lab, activated from the lab's admin host with the real CLI,
// their mesh over kernel WireGuard proven, the admin host put on the VPN,
// SSH over the VPN, a VM added, one rebooted, and everything torn down.
func vmDemo(ctx context.Context, out io.Writer, binDir, image string, n int, accel string) (err error) {
	d := &demo{out: out, start: time.Now()}
	if binDir, err = filepath.Abs(binDir); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "fabric-vm-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return err
	}
	defer func() {
		d.step("tearing down: stopping the VMs (qemu), deleting namespaces %s-*", lab.Prefix())
		err = errors.Join(err, lab.Close())
	}()
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir})
	if err != nil {
		return err
	}
	vm := nshost.VMConfig{Image: image, Accel: accel}
	names := func(first int) func(int) string {
		return func(i int) string { return fmt.Sprintf("vm%d", first+i) }
	}
	d.step("booting %d VMs from %s on a bridge (underlay 198.51.100.0/24); each reads its settings from a config disk labelled FABRIC", n, image)
	t0 := time.Now()
	vms, err := f.AddVMPeers(ctx, n, names(1), nil, vm)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  %d VMs (qemu -accel %s) booted to fabricd listening in %.1fs\n", n, vms[0].Accel(), time.Since(t0).Seconds())
	for _, h := range vms {
		fmt.Fprintf(out, "  %-4s %s  pubapi %s  console %s\n", h.Name(), h.IP(), f.Endpoint(h), h.ConsoleLog())
	}
	if err := d.vmCluster(ctx, f, vms); err != nil {
		return err
	}
	if err := d.vmAdmin(ctx, f); err != nil {
		return err
	}
	d.step("booting vm%d and adding it: fabric add-nodes --nodes <its endpoint>", n+1)
	more, err := f.AddVMPeers(ctx, 1, names(n+1), nil, vm)
	if err != nil {
		return err
	}
	if err := d.run(ctx, f, "add-nodes", "--nodes", f.Endpoint(more[0]), "--admin-dir", f.AdminDir); err != nil {
		return err
	}
	vms = append(vms, more...)
	if err := d.converge(ctx, f, vms); err != nil {
		return err
	}
	if err := d.adminReaches(ctx, f, more[0]); err != nil {
		return err
	}
	if err := d.vmReboot(ctx, f, vms, vms[1]); err != nil {
		return err
	}
	return d.adminVPNDown(ctx, f)
}

// sshUser is the SSH user the demo activates the cluster with.
const sshUser = "alice"

// vmCluster activates the VMs with an SSH user, waits for the mesh and
// proves it.
func (d *demo) vmCluster(ctx context.Context, f *nshost.Fabric, vms []*nshost.Host) error {
	key, err := f.NewSSHUserKey(ctx, sshUser)
	if err != nil {
		return err
	}
	users, err := f.WriteUsersFile(map[string]string{sshUser: key})
	if err != nil {
		return err
	}
	d.step("fabric activate --coordinator %s --nodes <%d others> --users users.yaml (SSH user %s)", f.Endpoint(vms[0]), len(vms)-1, sshUser)
	t0 := time.Now()
	out, err := f.Activate(ctx, vms[0], vms[1:], "--users", users)
	d.show(out)
	if err != nil {
		return err
	}
	if err := d.converge(ctx, f, vms); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  activate to full mesh: %.1fs for %d VMs\n", time.Since(t0).Seconds(), len(vms))
	return d.run(ctx, f, "status", "--admin-dir", f.AdminDir)
}

// converge waits for every VM to be active and proves the mesh over kernel
// WireGuard.
func (d *demo) converge(ctx context.Context, f *nshost.Fabric, vms []*nshost.Host) error {
	out, err := f.Watch(ctx, len(vms), 5*time.Minute)
	d.show(out)
	if err != nil {
		return err
	}
	d.step("proving the mesh: in every VM, wg show fabric0 lists every other peer, every VM pings every VPN IP, and fabric0 is a kernel WireGuard link")
	if err := f.CheckMesh(ctx, vms); err != nil {
		return err
	}
	if err := f.CheckKernelWireGuard(ctx, vms); err != nil {
		return err
	}
	last := vms[len(vms)-1]
	for _, cmd := range [][]string{{"wg", "show", "fabric0"}, {"ip", "-d", "link", "show", "dev", "fabric0"}} {
		out, err := last.Run(ctx, cmd[0], cmd[1:]...)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  %s on %s:\n", strings.Join(cmd, " "), last.Name())
		d.show(out)
	}
	return nil
}

// vmAdmin puts the admin host on the VPN and logs in to every VM over it as
// the cluster's SSH user.
func (d *demo) vmAdmin(ctx context.Context, f *nshost.Fabric) error {
	st, err := d.adminVPNUp(ctx, f)
	if err != nil {
		return err
	}
	d.step("SSH over the VPN from the admin host to every VM as %s, running id", sshUser)
	for _, p := range st.Peers {
		out, err := f.SSHAs(ctx, sshUser, p.VPNIP, "hostname; id")
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  ssh %s@%s: %s\n", sshUser, p.VPNIP, strings.ReplaceAll(strings.TrimSpace(out), "\n", ": "))
	}
	return nil
}

// adminReaches pings vm's VPN IP from the admin host: `fabric vpn up`
// added it to the admin's interface with no other step.
func (d *demo) adminReaches(ctx context.Context, f *nshost.Fabric, vm *nshost.Host) error {
	ip, err := vpnIP(ctx, f, vm.Name())
	if err != nil {
		return err
	}
	if err := nshost.PingAll(ctx, f.Admin, []string{ip}); err != nil {
		return fmt.Errorf("admin host: %w", err)
	}
	fmt.Fprintf(d.out, "  the admin host pings %s (%s) with no other step: fabric vpn follows the cluster\n", vm.Name(), ip)
	return nil
}

// vmReboot reboots vm and shows that it comes back with its VPN IP.
func (d *demo) vmReboot(ctx context.Context, f *nshost.Fabric, vms []*nshost.Host, vm *nshost.Host) error {
	before, err := vpnIP(ctx, f, vm.Name())
	if err != nil {
		return err
	}
	d.step("rebooting %s (systemctl reboot; VPN IP %s)", vm.Name(), before)
	t0 := time.Now()
	if err := vm.Reboot(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  %s is back after %.1fs\n", vm.Name(), time.Since(t0).Seconds())
	if err := d.converge(ctx, f, vms); err != nil {
		return err
	}
	after, err := vpnIP(ctx, f, vm.Name())
	if err != nil {
		return err
	}
	if after != before {
		return fmt.Errorf("%s came back with VPN IP %s, had %s", vm.Name(), after, before)
	}
	fmt.Fprintf(d.out, "  %s came back with the same VPN IP %s\n", vm.Name(), after)
	st, err := f.Status(ctx)
	if err != nil {
		return err
	}
	if len(st.Admins) == 0 {
		return errors.New("the cluster status lists no admin")
	}
	if out, err := vm.Run(ctx, "ping", "-c", "1", "-W", "5", st.Admins[0].VPNIP); err != nil {
		return fmt.Errorf("%s does not reach the admin after its reboot: %w: %s", vm.Name(), err, out)
	}
	fmt.Fprintf(d.out, "  %s pings the admin (%s) at once\n", vm.Name(), st.Admins[0].VPNIP)
	return nil
}

func vpnIP(ctx context.Context, f *nshost.Fabric, name string) (string, error) {
	st, err := f.Status(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range st.Peers {
		if p.Name == name {
			return p.VPNIP, nil
		}
	}
	return "", fmt.Errorf("%s is not in the cluster status", name)
}

// run runs the CLI on the admin host and shows the command and its output.
func (d *demo) run(ctx context.Context, f *nshost.Fabric, args ...string) error {
	fmt.Fprintf(d.out, "  $ fabric %s\n", strings.Join(args, " "))
	out, err := f.CLI(ctx, args...)
	d.show(out)
	return err
}

func (d *demo) note(format string, args ...any) {
	fmt.Fprintf(d.out, "  note: %s\n", fmt.Sprintf(format, args...))
}
