// Package demo is `make demo`: a whole local fabric cluster on network
// namespace hosts (testbed/nshost) in the ripstop shape (two hordes),
// activated with the real CLI, its status shown, its mesh proven with wg and
// ping, the admin host on the VPN with `fabric vpn up` (a restarted host
// reaches it at once), pastiche transfers within and across hordes with a
// summary of what was allowed and refused, `fabric vpn down`, and
// everything torn down. With --image it is
// `make vm-demo` instead (vmdemo.go): VMs booted from the fabric image.
// With --ha it is `make ha-demo` (ha.go): two coordinators on etcd, one
// killed.
package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// Main runs the demo and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fabric-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	binDir := fs.String("bin-dir", "bin", "directory holding fabric and fabricd")
	hosts := fs.Int("hosts", 10, "number of fabricd hosts (the first half in horde sharks, the others in jets)")
	image := fs.String("image", "", "boot VMs from this disk image (make image) instead of namespace hosts: make vm-demo")
	vms := fs.Int("vms", 3, "with --image: number of VMs to activate (one more is added later)")
	accel := fs.String("accel", "", "with --image: qemu accelerator, kvm or tcg (default: KVM if it works here)")
	ha := fs.Bool("ha", false, "make ha-demo instead: 3 etcd members, 2 coordinators on etcd, 6 nodes; one coordinator killed with SIGKILL")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *ha {
		return haMain(ctx, stdout, stderr, *binDir)
	}
	if *image != "" {
		return vmMain(ctx, stdout, stderr, *binDir, *image, *vms, *accel)
	}
	if *hosts < 4 || *hosts > 200 {
		fmt.Fprintln(stderr, "fabric-demo: --hosts must be 4-200 (two hordes of at least two)")
		return 2
	}
	if err := nshost.Check(); err != nil {
		fmt.Fprintf(stderr, "fabric-demo: %v\nThe demo makes network namespaces and TUN devices, which needs root: sudo make demo\n", err)
		return 1
	}
	if err := run(ctx, stdout, *binDir, *hosts); err != nil {
		fmt.Fprintf(stderr, "fabric-demo: %v\n", err)
		return 1
	}
	return 0
}

// haMain checks the machine and runs the HA demo.
func haMain(ctx context.Context, stdout, stderr io.Writer, binDir string) int {
	if err := nshost.Check(); err != nil {
		fmt.Fprintf(stderr, "fabric-demo: %v\nThe HA demo makes network namespaces and TUN devices, which needs root: sudo make ha-demo\n", err)
		return 1
	}
	if err := haDemo(ctx, stdout, binDir); err != nil {
		fmt.Fprintf(stderr, "fabric-demo: %v\n", err)
		return 1
	}
	return 0
}

// vmMain checks the machine and runs the VM demo.
func vmMain(ctx context.Context, stdout, stderr io.Writer, binDir, image string, n int, accel string) int {
	if n < 2 || n > 20 {
		fmt.Fprintln(stderr, "fabric-demo: --vms must be 2-20")
		return 2
	}
	for _, check := range []func() error{nshost.Check, nshost.CheckVMTools} {
		if err := check(); err != nil {
			fmt.Fprintf(stderr, "fabric-demo: %v\nThe VM demo boots qemu VMs on a bridge in a network namespace, as root: sudo make vm-demo\n", err)
			return 1
		}
	}
	if err := vmDemo(ctx, stdout, binDir, image, n, accel); err != nil {
		fmt.Fprintf(stderr, "fabric-demo: %v\n", err)
		return 1
	}
	return 0
}

type demo struct {
	out   io.Writer
	start time.Time
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n[%5.1fs] == %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) show(text string) { fmt.Fprint(d.out, indent(text)) }

func run(ctx context.Context, out io.Writer, binDir string, n int) (err error) {
	d := &demo{out: out, start: time.Now()}
	binDir, err = filepath.Abs(binDir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "fabric-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d.step("making %d namespace hosts on a bridge (underlay 198.51.100.0/24) and an admin host; hordes sharks and jets", n)
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return err
	}
	defer func() {
		d.step("tearing down: stopping fabricd, deleting namespaces %s-*", lab.Prefix())
		err = errors.Join(err, lab.Close())
	}()
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir})
	if err != nil {
		return err
	}
	hosts, err := f.AddPeers(ctx, n, func(i int) string { return fmt.Sprintf("host%d", i+1) },
		func(i int) nshost.PeerOptions { return nshost.PeerOptions{Horde: horde(i, n)} })
	if err != nil {
		return err
	}
	for i, h := range hosts {
		fmt.Fprintf(out, "  %-7s %s  horde %-6s fabricd pid %d, pubapi %s\n", h.Name(), h.IP(), horde(i, n), f.Daemon(h).PID(), f.Endpoint(h))
	}
	if err := d.cluster(ctx, f, hosts); err != nil {
		return err
	}
	if err := d.adminVPN(ctx, f, hosts[len(hosts)-1]); err != nil {
		return err
	}
	if err := d.transfers(ctx, f, hosts); err != nil {
		return err
	}
	return d.adminVPNDown(ctx, f)
}

// horde puts the first half of n hosts in sharks, the others in jets.
func horde(i, n int) string {
	if i < n/2 {
		return "sharks"
	}
	return "jets"
}

func (d *demo) cluster(ctx context.Context, f *nshost.Fabric, hosts []*nshost.Host) error {
	d.step("fabric activate --coordinator %s --nodes <%d others> --vpn-cidr 203.0.113.0/24", f.Endpoint(hosts[0]), len(hosts)-1)
	t0 := time.Now()
	out, err := f.Activate(ctx, hosts[0], hosts[1:])
	d.show(out)
	if err != nil {
		return err
	}
	out, err = f.Watch(ctx, len(hosts), time.Minute, "pastiche")
	d.show(out)
	if err != nil {
		return err
	}
	converged := time.Since(t0)
	d.step("fabric status")
	out, err = f.CLI(ctx, "status", "--admin-dir", f.AdminDir)
	d.show(out)
	if err != nil {
		return err
	}
	d.step("proving the mesh: on every host, wg show fabric0 lists every other peer, and every host pings every VPN IP")
	if err := f.CheckMesh(ctx, hosts); err != nil {
		return err
	}
	wg, err := hosts[len(hosts)-1].Run(ctx, "wg", "show", "fabric0")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  %d hosts x %d VPN IPs: every ping answered; wg show fabric0 on %s:\n", len(hosts), len(hosts), hosts[len(hosts)-1].Name())
	d.show(wg)
	fmt.Fprintf(d.out, "\nactivate to converged mesh: %.2fs for %d hosts\n", converged.Seconds(), len(hosts))
	return nil
}

func indent(s string) string {
	out := "    "
	for i, c := range s {
		out += string(c)
		if c == '\n' && i < len(s)-1 {
			out += "    "
		}
	}
	if len(s) > 0 && s[len(s)-1] != '\n' {
		out += "\n"
	}
	return out
}
