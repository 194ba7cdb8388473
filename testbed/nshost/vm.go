package nshost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// VMConfig says how Lab.AddVMs boots its virtual machines.
type VMConfig struct {
	// Image is the raw disk image every VM boots (make image:
	// image/out/fabric.img). Each VM gets a copy-on-write overlay of it,
	// its own disk that survives reboots of the VM.
	Image string
	// KernelBoot boots the kernel, initrd and command line that make image
	// writes beside the image (vmlinuz, initrd.img, cmdline) directly,
	// skipping the BIOS and GRUB. Otherwise the VM boots from its disk as a
	// hypervisor would.
	KernelBoot bool
	// MemoryMiB of each VM (default 512).
	MemoryMiB int
	// Accel is "kvm", "tcg" or "" for KVM when it works here, else TCG
	// (see Accel).
	Accel string
	// SSHFrom is the lab host the VMs are reached from: Host.Run on a VM is
	// ssh from there, as root, with a key of the lab that every VM's config
	// disk authorizes.
	SSHFrom *Host
	// Files adds files to a VM's config disk (path relative to its root,
	// e.g. "fabricd.yaml"); AddVMs itself writes network/10-underlay.network,
	// hostname and ssh/authorized_keys.
	Files func(h *Host) (map[string][]byte, error)
}

const (
	qemuBin         = "qemu-system-x86_64"
	defaultVMMemory = 512
	// vmBootTimeout bounds a boot under TCG on a 2-core machine that other
	// work keeps busy too (an idle one boots in a few minutes).
	vmBootTimeout = 15 * time.Minute
)

// vmState is what a Host that is a VM has beyond a namespace host.
type vmState struct {
	cfg        VMConfig
	accel      string
	mac        string
	tap        string // in the switch namespace, on the bridge
	disk       string // the VM's qcow2 overlay of cfg.Image
	configDisk string
	console    string // the serial console's log

	mu   sync.Mutex
	qemu *Process
}

// IsVM reports whether h is a virtual machine (AddVMs) rather than a
// network namespace.
func (h *Host) IsVM() bool { return h.vm != nil }

// ConsoleLog returns the file holding a VM's serial console output ("" for a
// namespace host).
func (h *Host) ConsoleLog() string {
	if h.vm == nil {
		return ""
	}
	return h.vm.console
}

// Accel returns "kvm" or "tcg", the accelerator a VM runs with ("" for a
// namespace host).
func (h *Host) Accel() string {
	if h.vm == nil {
		return ""
	}
	return h.vm.accel
}

// AddVMs creates n virtual machines on the lab's bridge, named namef(i)
// (nil: vm0, vm1, ...), with the next underlay addresses, and boots them
// with qemu. Each has a TAP device on the bridge and a config disk labelled
// FABRIC (docs/image.md) giving its address, name and the lab's SSH key. It
// returns once qemu runs (Fabric.AddVMPeers waits for fabricd). Lab.Close
// stops the VMs (their qemu processes) and deletes their TAP devices with
// the switch namespace.
func (l *Lab) AddVMs(ctx context.Context, n int, namef func(i int) string, cfg VMConfig) ([]*Host, error) {
	if namef == nil {
		namef = func(i int) string { return "vm" + strconv.Itoa(i) }
	}
	if err := checkVMConfig(&cfg); err != nil {
		return nil, fmt.Errorf("adding VMs: %w", err)
	}
	accel, why, err := Accel(ctx, cfg.Accel, kernelOf(cfg.Image))
	if err != nil {
		return nil, fmt.Errorf("adding VMs: %w", err)
	}
	l.log.Info("VM accelerator", "accel", accel, "why", why)
	if _, err := l.sshKey(ctx); err != nil {
		return nil, fmt.Errorf("adding VMs: %w", err)
	}
	l.life.RLock()
	defer l.life.RUnlock()
	if l.closed {
		return nil, errors.New("adding VMs: lab is closed")
	}
	hs, err := l.reserve(n, namef)
	if err != nil {
		return nil, fmt.Errorf("adding VMs: %w", err)
	}
	for _, h := range hs {
		o := h.ip.As4()
		h.ns = "" // a VM has no namespace of its own
		h.vm = &vmState{
			cfg:        cfg,
			accel:      accel,
			mac:        fmt.Sprintf("52:54:00:%02x:%02x:%02x", o[1], o[2], o[3]),
			tap:        "t" + strconv.Itoa(int(o[3])),
			disk:       filepath.Join(h.dir, "disk.qcow2"),
			configDisk: filepath.Join(h.dir, "config.img"),
			console:    filepath.Join(h.dir, "console.log"),
		}
	}
	err = forEach(len(hs), func(i int) error { return l.createVM(ctx, hs[i]) })
	if err != nil {
		return nil, err
	}
	return hs, nil
}

func checkVMConfig(cfg *VMConfig) error {
	if cfg.SSHFrom == nil || cfg.SSHFrom.vm != nil {
		return errors.New("VMConfig.SSHFrom must be a namespace host of the lab")
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = defaultVMMemory
	}
	files := []string{cfg.Image}
	if cfg.KernelBoot {
		dir := filepath.Dir(cfg.Image)
		files = append(files, filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img"), filepath.Join(dir, "cmdline"))
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("VM image: %w (make image builds it)", err)
		}
	}
	return CheckVMTools()
}

// CheckVMTools reports whether the programs that boot VMs are installed.
func CheckVMTools() error {
	for _, t := range []struct{ bin, pkg string }{
		{qemuBin, "qemu-system-x86"}, {"qemu-img", "qemu-utils"}, {"mkfs.vfat", "dosfstools"},
		{"mcopy", "mtools"}, {"ssh", "openssh-client"}, {"ssh-keygen", "openssh-client"},
	} {
		if _, err := exec.LookPath(t.bin); err != nil {
			return fmt.Errorf("needs %s (apt-get install %s): %w", t.bin, t.pkg, err)
		}
	}
	return nil
}

// kernelOf is the kernel make image writes beside image.
func kernelOf(image string) string { return filepath.Join(filepath.Dir(image), "vmlinuz") }

func (l *Lab) createVM(ctx context.Context, h *Host) error {
	if err := l.prepareVM(ctx, h); err != nil {
		return fmt.Errorf("creating VM %s: %w", h.name, err)
	}
	if err := h.startQemu(); err != nil {
		return fmt.Errorf("creating VM %s: %w", h.name, err)
	}
	l.mu.Lock()
	h.ready = true
	l.mu.Unlock()
	l.log.Info("VM started", "host", h.name, "ip", h.ip, "accel", h.vm.accel, "console", h.vm.console)
	return nil
}

// prepareVM makes the VM's directory, disks and TAP device.
func (l *Lab) prepareVM(ctx context.Context, h *Host) error {
	v := h.vm
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return err
	}
	image, err := filepath.Abs(v.cfg.Image)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image, v.disk).CombinedOutput()
	if err != nil {
		return commandError("qemu-img create "+v.disk, err, out)
	}
	files, err := l.vmFiles(h)
	if err != nil {
		return err
	}
	if err := MakeConfigDisk(ctx, v.configDisk, files); err != nil {
		return err
	}
	return runIPBatch(ctx, l.switchNS,
		"tuntap add dev "+v.tap+" mode tap",
		"link set "+v.tap+" master "+bridgeName+" up",
	)
}

// vmFiles is the content of h's config disk.
func (l *Lab) vmFiles(h *Host) (map[string][]byte, error) {
	pub, err := os.ReadFile(l.sshKeyPath() + ".pub")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"hostname":                    []byte(h.name + "\n"),
		"network/10-underlay.network": underlayNetwork(h.vm.mac, h.ip.String()+"/"+strconv.Itoa(l.cfg.Underlay.Bits())),
		"ssh/authorized_keys":         pub,
	}
	if h.vm.cfg.Files != nil {
		more, err := h.vm.cfg.Files(h)
		if err != nil {
			return nil, err
		}
		for name, data := range more {
			files[name] = data
		}
	}
	return files, nil
}

// underlayNetwork is a systemd-networkd file giving the link with mac the
// static address addr (no gateway: the lab has no way out).
func underlayNetwork(mac, addr string) []byte {
	return []byte("[Match]\nMACAddress=" + mac + "\n\n[Network]\nAddress=" + addr + "\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
}

// qemuArgs is the qemu command line of h.
func (h *Host) qemuArgs() ([]string, error) {
	v := h.vm
	args := []string{
		"-name", h.name, "-nodefaults", "-no-user-config", "-display", "none",
		"-accel", v.accel, "-m", strconv.Itoa(v.cfg.MemoryMiB), "-smp", "1",
		"-serial", "file:" + v.console, "-monitor", "none",
		"-drive", "file=" + v.disk + ",if=virtio,format=qcow2,discard=unmap",
		"-drive", "file=" + v.configDisk + ",if=virtio,format=raw,readonly=on",
		"-netdev", "tap,id=n0,ifname=" + v.tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=" + v.mac + ",romfile=",
		"-device", "virtio-rng-pci",
	}
	if v.cfg.KernelBoot {
		dir := filepath.Dir(v.cfg.Image)
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			return nil, err
		}
		args = append(args, "-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.img"),
			"-append", strings.TrimSpace(string(cmdline)))
	}
	return args, nil
}

// startQemu starts h's qemu in the switch namespace, where its TAP device is.
func (h *Host) startQemu() error {
	args, err := h.qemuArgs()
	if err != nil {
		return err
	}
	argv := append([]string{"netns", "exec", h.lab.switchNS, qemuBin}, args...)
	p, err := h.startArgv(nil, "qemu", argv, commandLine(qemuBin, args))
	if err != nil {
		return err
	}
	h.vm.mu.Lock()
	h.vm.qemu = p
	h.vm.mu.Unlock()
	return nil
}

// QemuProcess returns a VM's qemu process (nil for a namespace host).
func (h *Host) QemuProcess() *Process {
	if h.vm == nil {
		return nil
	}
	h.vm.mu.Lock()
	defer h.vm.mu.Unlock()
	return h.vm.qemu
}

// sshArgs are the ip(8) arguments that run name with args on the VM as
// root over ssh from cfg.SSHFrom. ssh hands the remote shell one string,
// so every argument is quoted for it.
func (h *Host) sshArgs(name string, args []string) []string {
	remote := make([]string, 0, 1+len(args))
	for _, a := range append([]string{name}, args...) {
		remote = append(remote, shellQuote(a))
	}
	argv := []string{"netns", "exec", h.vm.cfg.SSHFrom.ns, "ssh"}
	argv = append(argv, h.lab.sshOptions(filepath.Join(h.dir, "known_hosts"))...)
	return append(argv, "root@"+h.ip.String(), "--", strings.Join(remote, " "))
}

// SSHOptions are the ssh(1) options that log in with the private key in
// keyFile ("": the lab's key, which the VMs' config disks authorize for
// root), for logins by hand or over the VPN: ssh <SSHOptions(...)...>
// USER@IP. Host keys are learnt on first use.
func (l *Lab) SSHOptions(keyFile string) []string {
	if keyFile == "" {
		keyFile = l.sshKeyPath()
	}
	return sshOptions(keyFile, filepath.Join(l.cfg.WorkDir, "ssh", "known_hosts"))
}

// sshOptions are ssh options with the lab's key for unattended use: the
// host key is learnt on first use into knownHosts and checked afterwards.
func (l *Lab) sshOptions(knownHosts string) []string {
	return sshOptions(l.sshKeyPath(), knownHosts)
}

func sshOptions(keyFile, knownHosts string) []string {
	return []string{"-F", "/dev/null", "-i", keyFile,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6"}
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (l *Lab) sshKeyPath() string { return filepath.Join(l.cfg.WorkDir, "ssh", "id_ed25519") }

// sshKey makes the lab's SSH key on first use and returns its path.
func (l *Lab) sshKey(ctx context.Context) (string, error) {
	l.sshOnce.Do(func() {
		path := l.sshKeyPath()
		if l.sshErr = os.MkdirAll(filepath.Dir(path), 0o700); l.sshErr != nil {
			return
		}
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nshost-"+l.cfg.Prefix, "-f", path).CombinedOutput()
		if err != nil {
			l.sshErr = commandError("ssh-keygen", err, out)
		}
	})
	return l.sshKeyPath(), l.sshErr
}

// BootID returns the VM's boot ID, which changes at every boot.
func (h *Host) BootID(ctx context.Context) (string, error) {
	out, err := h.Run(ctx, "cat", "/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(out), err
}

// Reboot reboots the VM as an operator would (systemctl reboot) and waits
// until it is back up over ssh with a new boot ID.
func (h *Host) Reboot(ctx context.Context) error {
	if h.vm == nil {
		return fmt.Errorf("rebooting %s: not a VM", h.name)
	}
	old, err := h.BootID(ctx)
	if err != nil {
		return fmt.Errorf("rebooting %s: %w", h.name, err)
	}
	// The connection may drop before ssh sees the command's status.
	_, _ = h.Run(ctx, "systemctl", "reboot")
	if err := h.waitBoot(ctx, old); err != nil {
		return fmt.Errorf("rebooting %s: %w", h.name, err)
	}
	return nil
}

// waitBoot polls ssh until the VM answers with a boot ID other than old,
// or its qemu exits, or ctx ends (at most vmBootTimeout).
func (h *Host) waitBoot(ctx context.Context, old string) error {
	if h.vm == nil {
		return fmt.Errorf("%s is not a VM", h.name)
	}
	ctx, cancel := context.WithTimeout(ctx, vmBootTimeout)
	defer cancel()
	qemu := h.QemuProcess()
	var last error
	for {
		id, err := h.BootID(ctx)
		if err == nil && id != old {
			return nil
		}
		last = err
		select {
		case <-qemu.Exited():
			return fmt.Errorf("qemu of %s exited: %v (console %s, log %s)", h.name, qemu.Err(), h.vm.console, qemu.LogPath())
		case <-ctx.Done():
			return fmt.Errorf("%s does not answer over ssh: %w (last: %v; console %s)", h.name, ctx.Err(), last, h.vm.console)
		case <-time.After(time.Second):
		}
	}
}
