package nshost

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/fabricmesh/fabric/internal/fabricdconfig"
)

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"wg", "wg"},
		{"/proc/sys/kernel/random/boot_id", "/proc/sys/kernel/random/boot_id"},
		{"sport = :5201", "'sport = :5201'"},
		{"", "''"},
		{"it's", `'it'\''s'`},
		{"$HOME; rm -rf /", "'$HOME; rm -rf /'"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	// What the remote shell makes of the quoted words is the original.
	var words []string
	for _, tt := range tests {
		words = append(words, shellQuote(tt.in))
	}
	out, err := exec.Command("sh", "-c", `printf '%s\n' `+strings.Join(words, " ")).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, tt := range tests {
		want = append(want, tt.in)
	}
	if diff := cmp.Diff(want, strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")); diff != "" {
		t.Errorf("words after sh parses them (-want +got):\n%s", diff)
	}
}

func TestConfigDiskContent(t *testing.T) {
	wantNetwork := "[Match]\nMACAddress=52:54:00:c6:33:0b\n\n[Network]\nAddress=198.51.100.11/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
	if diff := cmp.Diff(wantNetwork, string(underlayNetwork("52:54:00:c6:33:0b", "198.51.100.11/24"))); diff != "" {
		t.Errorf("underlayNetwork (-want +got):\n%s", diff)
	}
	wantConfig := `# fabricd.yaml of a VM peer, written by testbed/nshost
listen: 198.51.100.11:7443
name: vm1
horde: jets
log-level: info
`
	if diff := cmp.Diff(wantConfig, vmFabricdConfig("vm1", "jets", "198.51.100.11:7443", "info")); diff != "" {
		t.Errorf("vmFabricdConfig (-want +got):\n%s", diff)
	}
	if got := vmFabricdConfig("vm1", "", "198.51.100.11:7443", "info"); strings.Contains(got, "horde") {
		t.Errorf("vmFabricdConfig without a horde names one:\n%s", got)
	}
	// fabricd reads it as the VM's /etc/fabric/fabricd.yaml.
	file, err := fabricdconfig.Parse("fabricd.yaml", []byte(wantConfig))
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("fabricd", pflag.ContinueOnError)
	fabricdconfig.AddFlags(fs)
	got, err := fabricdconfig.Resolve(file, fs)
	if err != nil {
		t.Fatal(err)
	}
	if got.Listen != netip.MustParseAddrPort("198.51.100.11:7443") || got.Name != "vm1" || got.Horde != "jets" ||
		got.BootstrapKeyFile != "/etc/fabric/bootstrap.key" || got.StateDir != "/var/lib/fabric" {
		t.Errorf("fabricd reads the VM's config as %+v", got)
	}
}

func TestMakeConfigDisk(t *testing.T) {
	for _, bin := range []string{"mkfs.vfat", "mcopy", "mtype", "mlabel"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: needs %s (dosfstools, mtools)", bin)
		}
	}
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "config.img")
	files := map[string][]byte{
		"fabricd.yaml":                []byte("listen: 198.51.100.11:7443\n"),
		"bootstrap.key":               []byte("secret\n"),
		"network/10-underlay.network": []byte("[Match]\n"),
		"ssh/authorized_keys":         []byte("ssh-ed25519 AAAA test\n"),
	}
	if err := MakeConfigDisk(ctx, img, files); err != nil {
		t.Fatal(err)
	}
	label, err := mtools("mlabel", "-s", "-i", img, "::")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(label, "FABRIC") {
		t.Errorf("mlabel -s: %q, want the label FABRIC", label)
	}
	for name, want := range files {
		got, err := mtools("mtype", "-i", img, "::/"+name)
		if err != nil {
			t.Errorf("reading %s back: %v", name, err)
			continue
		}
		if got != string(want) {
			t.Errorf("%s on the disk is %q, want %q", name, got, want)
		}
	}

	for _, bad := range []string{"../escape", "/abs", "a//b", "."} {
		img := filepath.Join(t.TempDir(), "bad.img")
		err := MakeConfigDisk(ctx, img, map[string][]byte{bad: nil})
		if err == nil || !strings.Contains(err.Error(), "clean relative path") {
			t.Errorf("MakeConfigDisk with file %q: error %v, want one about a clean relative path", bad, err)
		}
		if _, err := os.Stat(img); err == nil {
			t.Errorf("MakeConfigDisk with file %q made %s", bad, img)
		}
	}
}

func mtools(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", commandError(commandLine(name, args), err, out)
	}
	return string(out), nil
}

func TestAccelAsked(t *testing.T) {
	ctx := context.Background()
	for _, want := range []string{"kvm", "tcg"} {
		got, why, err := Accel(ctx, want, "/nonexistent/vmlinuz")
		if err != nil || got != want || why != "asked for" {
			t.Errorf("Accel(%q) = %q, %q, %v; want %q, asked for", want, got, why, err, want)
		}
	}
	if _, _, err := Accel(ctx, "hvf", "/nonexistent/vmlinuz"); err == nil || !strings.Contains(err.Error(), `"hvf"`) {
		t.Errorf("Accel(hvf) error = %v, want one naming it", err)
	}
}

func TestQemuArgs(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"fabric.img": "", "vmlinuz": "", "initrd.img": "", "cmdline": "root=UUID=x ro console=ttyS0,115200\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := &Host{name: "vm1", dir: "/w/vm1", ip: netip.MustParseAddr("198.51.100.11"), vm: &vmState{
		cfg: VMConfig{Image: filepath.Join(dir, "fabric.img"), MemoryMiB: 512}, accel: "tcg",
		mac: "52:54:00:c6:33:0b", tap: "t11", disk: "/w/vm1/disk.qcow2", configDisk: "/w/vm1/config.img", console: "/w/vm1/console.log",
	}}
	want := []string{
		"-name", "vm1", "-nodefaults", "-no-user-config", "-display", "none",
		"-accel", "tcg", "-m", "512", "-smp", "1",
		"-serial", "file:/w/vm1/console.log", "-monitor", "none",
		"-drive", "file=/w/vm1/disk.qcow2,if=virtio,format=qcow2,discard=unmap",
		"-drive", "file=/w/vm1/config.img,if=virtio,format=raw,readonly=on",
		"-netdev", "tap,id=n0,ifname=t11,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:c6:33:0b,romfile=",
		"-device", "virtio-rng-pci",
	}
	got, err := h.qemuArgs()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("qemuArgs, disk boot (-want +got):\n%s", diff)
	}
	h.vm.cfg.KernelBoot = true
	want = append(want, "-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.img"),
		"-append", "root=UUID=x ro console=ttyS0,115200")
	if got, err = h.qemuArgs(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("qemuArgs, kernel boot (-want +got):\n%s", diff)
	}
}

func TestAddVMsRefusesBadConfig(t *testing.T) {
	l := &Lab{cfg: Config{WorkDir: t.TempDir()}}
	tests := []struct {
		name string
		cfg  VMConfig
		want string
	}{
		{"no ssh host", VMConfig{Image: "/nonexistent.img"}, "SSHFrom"},
		{"ssh from a VM", VMConfig{Image: "/nonexistent.img", SSHFrom: &Host{vm: &vmState{}}}, "SSHFrom"},
		{"no image", VMConfig{Image: "/nonexistent.img", SSHFrom: &Host{}}, "make image builds it"},
		{"no kernel", VMConfig{Image: os.Args[0], KernelBoot: true, SSHFrom: &Host{}}, "vmlinuz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.AddVMs(context.Background(), 1, nil, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("AddVMs error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
