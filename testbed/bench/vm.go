package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// vm measures the fabric image booted with qemu (--image): how long a VM
// takes from qemu's start until its fabricd serves the pubapi (booted from
// its disk, and by direct kernel boot), activation to a full mesh of three
// VMs over kernel WireGuard next to three namespace hosts over wireguard-go,
// and iperf3 between two VMs through the tunnel next to the same two VMs on
// the underlay. Each VM boots alone, so the boot figures do not include
// other VMs competing for the CPU. One run: a run under software emulation
// takes minutes.
func (b *bench) vm(ctx context.Context, o options, nsErr error) {
	if err := errors.Join(nsErr, vmReady(o)); err != nil {
		b.skip("vm: VM scenario", err)
		return
	}
	accel, why, err := nshost.Accel(ctx, o.vmAccel, filepath.Join(filepath.Dir(o.image), "vmlinuz"))
	if err != nil {
		b.fail("vm", err)
		return
	}
	fmt.Fprintf(b.out, "%-44s %s (%s)\n", "vm accelerator:", accel, why)
	if accel != "kvm" {
		b.skip("vm: boot with KVM", errors.New(why))
	}
	r, err := vmRun(ctx, o, accel)
	if err != nil {
		b.fail("vm", err)
		return
	}
	b.record("vm_boot_to_fabricd_ready_disk_"+accel+"_s", "s (qemu start -> pubapi accepts, BIOS + GRUB + kernel + systemd)", []float64{r.bootDisk.Seconds()})
	b.record("vm_boot_to_fabricd_ready_kernel_"+accel+"_s", "s (the same with direct kernel boot)", []float64{r.bootKernel.Seconds()})
	b.record("activate_to_mesh_3_vms_kernel_wg_s", "s (fabric activate -> watch converged, every VM pings every VPN IP)", []float64{r.meshVMs.Seconds()})
	b.measure("activate_to_mesh_3_hosts_s", func() (time.Duration, error) { return meshTime(ctx, o.binDir, 3) })
	b.record("iperf3_vm_wg_mb_per_s", "MB/s (iperf3 TCP between two VMs through kernel WireGuard)", []float64{r.iperfVPN})
	b.record("iperf3_vm_underlay_mb_per_s", "MB/s (the same two VMs on the underlay)", []float64{r.iperfUnderlay})
	b.ratio("iperf3_vm_wg_vs_underlay_ratio", r.iperfVPN, r.iperfUnderlay, "tunnel/underlay")
}

// vmReady says why the VM scenario cannot run, if it cannot.
func vmReady(o options) error {
	if o.image == "" {
		return errors.New("no --image given (make bench passes image/out/fabric.img when make image has built it)")
	}
	if _, err := os.Stat(o.image); err != nil {
		return err
	}
	return nshost.CheckVMTools()
}

type vmResults struct {
	bootDisk, bootKernel, meshVMs time.Duration
	iperfVPN, iperfUnderlay       float64
}

func vmRun(ctx context.Context, o options, accel string) (vmResults, error) {
	var r vmResults
	work, err := os.MkdirTemp("", "fabric-bench-vm-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(work)
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: work})
	if err != nil {
		return r, err
	}
	defer lab.Close()
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: o.binDir, LogLevel: "warn"})
	if err != nil {
		return r, err
	}
	var vms []*nshost.Host
	boot := func(name string, kernelBoot bool) (time.Duration, error) {
		start := time.Now()
		hs, err := f.AddVMPeers(ctx, 1, func(int) string { return name }, nil,
			nshost.VMConfig{Image: o.image, Accel: accel, KernelBoot: kernelBoot})
		vms = append(vms, hs...)
		return time.Since(start), err
	}
	if r.bootDisk, err = boot("vm1", false); err != nil {
		return r, err
	}
	if r.bootKernel, err = boot("vm2", true); err != nil {
		return r, err
	}
	if _, err := boot("vm3", true); err != nil {
		return r, err
	}
	start := time.Now()
	if out, err := f.Activate(ctx, vms[0], vms[1:]); err != nil {
		return r, fmt.Errorf("%w: %s", err, out)
	}
	if out, err := f.Watch(ctx, len(vms), 10*time.Minute); err != nil {
		return r, fmt.Errorf("%w: %s", err, out)
	}
	if err := f.CheckMesh(ctx, vms); err != nil {
		return r, err
	}
	r.meshVMs = time.Since(start)
	if err := f.CheckKernelWireGuard(ctx, vms); err != nil {
		return r, err
	}
	st, err := f.Status(ctx)
	if err != nil {
		return r, err
	}
	var targetVPNIP string
	for _, p := range st.Peers {
		if p.Name == vms[2].Name() {
			targetVPNIP = p.VPNIP
		}
	}
	if r.iperfVPN, err = iperf3Between(ctx, vms[1], vms[2], targetVPNIP, o.iperfTime); err != nil {
		return r, fmt.Errorf("iperf3 through WireGuard: %w", err)
	}
	if r.iperfUnderlay, err = iperf3Between(ctx, vms[1], vms[2], vms[2].IP().String(), o.iperfTime); err != nil {
		return r, fmt.Errorf("iperf3 on the underlay: %w", err)
	}
	return r, nil
}

// iperf3Between runs a one-shot iperf3 server on target, bound to ip, and
// a client on source for d, and returns the MB/s the server received.
func iperf3Between(ctx context.Context, source, target *nshost.Host, ip string, d time.Duration) (float64, error) {
	srv, err := target.Start("iperf3", "-s", "-1", "-B", ip, "-p", fmt.Sprint(iperf3Port))
	if err != nil {
		return 0, err
	}
	defer srv.Stop(context.Background())
	if err := waitTCPListen(ctx, target, srv, iperf3Port); err != nil {
		return 0, err
	}
	secs := fmt.Sprint(max(1, int(d.Round(time.Second).Seconds())))
	out, err := source.Run(ctx, "iperf3", "-c", ip, "-p", fmt.Sprint(iperf3Port), "-t", secs, "-J")
	if err != nil {
		return 0, err
	}
	bps, err := parseIperf3(out)
	if err != nil {
		return 0, err
	}
	return bps / 8 / 1e6, nil
}
