package fabric_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// The VM tests boot the image of make image with qemu, one VM per peer, on
// the bridge of a namespace lab, and drive them from the lab's admin host
// with the real CLI. make vm-test builds the image and runs them.

// vmConverge bounds fabric watch in VM tests: under software emulation a
// VM is many times slower than a namespace host.
const vmConverge = 5 * time.Minute

// requireVMs skips the test unless VMs can be booted here; it returns the
// image to boot.
func requireVMs(t *testing.T) string {
	t.Helper()
	if err := nshost.Check(); err != nil {
		t.Skipf("VM test: %v", err)
	}
	image := os.Getenv("FABRIC_VM_IMAGE")
	if image == "" {
		t.Skip("VM test: FABRIC_VM_IMAGE is not set (make vm-test builds the image and sets it)")
	}
	if err := nshost.CheckVMTools(); err != nil {
		t.Skipf("VM test: %v", err)
	}
	return image
}

// newVMFabric makes a lab with an admin host for a cluster of VMs.
func newVMFabric(t *testing.T) *nshost.Fabric {
	t.Helper()
	ctx := context.Background()
	lab, err := nshost.New(ctx, nshost.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpConsoles(t, lab)
		}
		if err := lab.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	f, err := nshost.NewFabric(ctx, lab, nshost.FabricConfig{BinDir: binDir, LogLevel: os.Getenv("FABRIC_LOG_LEVEL")})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func dumpConsoles(t *testing.T, lab *nshost.Lab) {
	for _, h := range lab.Hosts() {
		if !h.IsVM() {
			continue
		}
		if out, err := h.Run(context.Background(), "journalctl", "-b", "-u", "fabricd", "-u", "fabric-config-disk", "-o", "short-monotonic", "--no-pager", "-n", "80"); err == nil {
			t.Logf("--- %s journal:\n%s", h.Name(), out)
			continue
		}
		if data, err := os.ReadFile(h.ConsoleLog()); err == nil {
			s := string(data)
			if len(s) > 6000 {
				s = "..." + s[len(s)-6000:]
			}
			t.Logf("--- %s console:\n%s", h.Name(), s)
		}
	}
}

// vmSpec is a VM of a VM test: its name and whether it boots its kernel
// directly (faster) or from its disk through the BIOS and GRUB.
type vmSpec struct {
	name       string
	kernelBoot bool
}

// bootVMs boots every VM of specs at once and returns them in the order of
// specs once each one's fabricd listens.
func bootVMs(t *testing.T, f *nshost.Fabric, image string, specs ...vmSpec) []*nshost.Host {
	t.Helper()
	vms := make([]*nshost.Host, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() {
			start := time.Now()
			hs, err := f.AddVMPeers(context.Background(), 1, func(int) string { return s.name }, nil,
				nshost.VMConfig{Image: image, Accel: os.Getenv("FABRIC_VM_ACCEL"), KernelBoot: s.kernelBoot})
			if err != nil {
				errs[i] = fmt.Errorf("booting %s: %w", s.name, err)
				return
			}
			vms[i] = hs[0]
			how := "from its disk (BIOS, GRUB)"
			if s.kernelBoot {
				how = "by direct kernel boot"
			}
			t.Logf("%s booted %s under %s to fabricd listening in %.1fs (%d VMs booting at once)", s.name, how, hs[0].Accel(), time.Since(start).Seconds(), len(specs))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return vms
}

// checkBootLoader requires that vm's kernel was started by GRUB (which puts
// BOOT_IMAGE= first on the command line) if fromDisk, and by qemu's direct
// kernel boot (the image's cmdline file, as is) otherwise.
func checkBootLoader(t *testing.T, vm *nshost.Host, fromDisk bool) {
	t.Helper()
	out, err := vm.Run(context.Background(), "cat", "/proc/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if grub := strings.HasPrefix(out, "BOOT_IMAGE=/vmlinuz "); grub != fromDisk {
		t.Fatalf("%s: kernel command line %q; booted by GRUB: %v, want %v", vm.Name(), strings.TrimSpace(out), grub, fromDisk)
	}
}

// TestVMCluster is the vm-demo flow with assertions, on three VMs from the
// image, booted at once: vm1, the coordinator, and vm3 by direct kernel
// boot, vm2 from its disk through GRUB. vm1 and vm2 are activated with an
// SSH user into a mesh over kernel WireGuard; the admin host joins the VPN
// and logs in to both over it as that user (and as a user added, then
// removed: refused); vm3 is added with add-nodes and reached the same way;
// internal/netmgr's namespace tests run inside vm3, whose kernel has WireGuard;
// vm2 is rebooted, through GRUB again, and comes back with its VPN IP.
func TestVMCluster(t *testing.T) {
	image := requireVMs(t)
	ctx := context.Background()
	f := newVMFabric(t)
	aliceKey, err := f.NewSSHUserKey(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	users, err := f.WriteUsersFile(map[string]string{"alice": aliceKey})
	if err != nil {
		t.Fatal(err)
	}
	vms := bootVMs(t, f, image, vmSpec{"vm1", true}, vmSpec{"vm2", false}, vmSpec{"vm3", true})
	coordinator, node, later := vms[0], vms[1], vms[2]
	checkBootLoader(t, coordinator, false)
	checkBootLoader(t, node, true)

	start := time.Now()
	activate(t, f, coordinator, []*nshost.Host{node}, "--users", users)
	if out, err := f.Watch(ctx, 2, vmConverge); err != nil {
		t.Fatalf("fabric watch --n 2: %v\n%s", err, out)
	}
	cluster := []*nshost.Host{coordinator, node}
	checkMesh(t, f, cluster)
	t.Logf("fabric activate to a pinged mesh of 2 VMs: %.1fs", time.Since(start).Seconds())
	if err := f.CheckKernelWireGuard(ctx, cluster); err != nil {
		t.Fatal(err)
	}
	if out, err := f.AdminVPNDaemonUp(ctx); err != nil {
		t.Fatalf("fabric vpn up: %v\n%s", err, out)
	}
	st := status(t, f)
	if err := nshost.PingAll(ctx, f.Admin, vpnIPs(st)); err != nil {
		t.Fatalf("admin host over the VPN: %v", err)
	}
	if t.Failed() {
		return
	}

	t.Run("SSH users over the VPN", func(t *testing.T) { testVMUsers(t, f, st) })

	t.Run("add a VM", func(t *testing.T) {
		if out, err := f.AddNodes(ctx, []*nshost.Host{later}); err != nil {
			t.Fatalf("fabric add-nodes: %v\n%s", err, out)
		}
		if out, err := f.Watch(ctx, 3, vmConverge); err != nil {
			t.Fatalf("fabric watch --n 3: %v\n%s", err, out)
		}
		cluster = append(cluster, later)
		checkMesh(t, f, cluster)
		if err := f.CheckKernelWireGuard(ctx, []*nshost.Host{later}); err != nil {
			t.Fatal(err)
		}
		// The admin's fabric vpn up follows the cluster: it reaches the new
		// VM over the VPN with no step of its own, and the SSH user of the
		// activation exists there.
		p := peerByName(t, status(t, f), later.Name())
		if err := eventually(ctx, vmConverge, func() error {
			out, err := f.SSHAs(ctx, "alice", p.VPNIP, "id")
			if err == nil && !strings.Contains(out, "(alice)") {
				err = fmt.Errorf("id said %q", out)
			}
			return err
		}); err != nil {
			t.Fatalf("ssh alice@%s (%s) after add-nodes: %v", p.VPNIP, p.Name, err)
		}
	})
	t.Run("netmgr kernel tests in a VM", func(t *testing.T) { runNetmgrTests(t, later) })

	t.Run("reboot a node", func(t *testing.T) {
		before := peerByName(t, status(t, f), node.Name())
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		checkBootLoader(t, node, true)
		if err := f.WaitFabricd(ctx, node); err != nil {
			t.Fatal(err)
		}
		if out, err := f.Watch(ctx, len(cluster), vmConverge); err != nil {
			t.Fatalf("fabric watch after the reboot: %v\n%s", err, out)
		}
		after := peerByName(t, status(t, f), node.Name())
		if after.VPNIP != before.VPNIP || after.WGPubKey != before.WGPubKey {
			t.Fatalf("after its reboot %s has VPN IP %s and key %s, want %s and %s", node.Name(), after.VPNIP, after.WGPubKey, before.VPNIP, before.WGPubKey)
		}
		// fabricd listens before it has brought fabric0 up from its state.
		if err := eventually(ctx, vmConverge, func() error { return f.CheckMesh(ctx, cluster) }); err != nil {
			t.Fatalf("mesh after the reboot: %v", err)
		}
		if err := f.CheckKernelWireGuard(ctx, []*nshost.Host{node}); err != nil {
			t.Fatal(err)
		}
		if out, err := f.SSHAs(ctx, "alice", after.VPNIP, "id"); err != nil || !strings.Contains(out, "(alice)") {
			t.Fatalf("ssh alice@%s after the reboot: %q, %v", after.VPNIP, out, err)
		}
	})
}

// testVMUsers logs in over the VPN to every peer of st as alice, the user
// of the activation's users file, and as bob once fabric users add has
// added him, and is refused as bob once fabric users remove has removed
// him.
func testVMUsers(t *testing.T, f *nshost.Fabric, st clusterstatus.Status) {
	ctx := context.Background()
	n := len(st.Peers)
	for _, p := range st.Peers {
		out, err := f.SSHAs(ctx, "alice", p.VPNIP, "id")
		if err != nil {
			t.Fatalf("ssh alice@%s (%s): %v", p.VPNIP, p.Name, err)
		}
		if !strings.Contains(out, "(alice)") {
			t.Errorf("id as alice on %s: %q", p.Name, out)
		}
	}
	bobKey, err := f.NewSSHUserKey(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := f.CLI(ctx, "users", "add", "bob", "--key", bobKey, "--admin-dir", f.AdminDir); err != nil {
		t.Fatalf("fabric users add bob: %v\n%s", err, out)
	}
	if out, err := f.Watch(ctx, n, vmConverge); err != nil {
		t.Fatalf("fabric watch after users add: %v\n%s", err, out)
	}
	for _, p := range st.Peers {
		if out, err := f.SSHAs(ctx, "bob", p.VPNIP, "id"); err != nil || !strings.Contains(out, "(bob)") {
			t.Fatalf("ssh bob@%s (%s) after fabric users add: %q, %v", p.VPNIP, p.Name, out, err)
		}
	}
	if out, err := f.CLI(ctx, "users", "remove", "bob", "--admin-dir", f.AdminDir); err != nil {
		t.Fatalf("fabric users remove bob: %v\n%s", err, out)
	}
	if out, err := f.Watch(ctx, n, vmConverge); err != nil {
		t.Fatalf("fabric watch after users remove: %v\n%s", err, out)
	}
	for _, p := range st.Peers {
		out, err := f.SSHAs(ctx, "bob", p.VPNIP, "id")
		if err == nil {
			t.Errorf("ssh bob@%s (%s) after fabric users remove logged in: %q", p.VPNIP, p.Name, out)
		} else if !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("ssh bob@%s (%s) after fabric users remove: %v, want Permission denied", p.VPNIP, p.Name, err)
		}
	}
}

// eventually calls check every second until it succeeds or timeout passes,
// and returns its last error.
func eventually(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

func vpnIPs(st clusterstatus.Status) []string {
	var ips []string
	for _, p := range st.Peers {
		ips = append(ips, p.VPNIP)
	}
	return ips
}

// runNetmgrTests runs internal/netmgr's namespace tests inside vm, whose kernel
// has WireGuard, and requires the kernel-mode subtests to pass, not skip.
func runNetmgrTests(t *testing.T, vm *nshost.Host) {
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "netmgr.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./internal/netmgr")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the netmgr tests: %v\n%s", err, out)
	}
	data, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	copyIn := vm.Command(ctx, "sh", "-c", "cat >/root/netmgr.test && chmod 755 /root/netmgr.test")
	copyIn.Stdin = data
	if out, err := copyIn.CombinedOutput(); err != nil {
		t.Fatalf("copying the netmgr tests into %s: %v\n%s", vm.Name(), err, out)
	}
	out, err := vm.Run(ctx, "/root/netmgr.test", "-test.run", "TestManagerInNamespaces", "-test.v", "-test.count=1", "-test.timeout=10m")
	t.Logf("netmgr tests in %s:\n%s", vm.Name(), out)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"kernel", "auto"} {
		if !strings.Contains(out, "--- PASS: TestManagerInNamespaces/"+mode) {
			t.Errorf("TestManagerInNamespaces/%s did not pass in the VM", mode)
		}
	}
	if strings.Contains(out, "SKIP") {
		t.Error("a netmgr test skipped in the VM")
	}
	if _, err := vm.Run(ctx, "rm", "-f", "/root/netmgr.test"); err != nil {
		t.Error(err)
	}
}
