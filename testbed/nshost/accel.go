package nshost

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// kvmProbeTimeout is how long a kernel gets to print its first line under
// KVM; it takes well under a second where KVM works.
const kvmProbeTimeout = 5 * time.Second

var kvmProbes sync.Map // kernel path -> *kvmProbe

type kvmProbe struct {
	once sync.Once
	err  error // why KVM cannot run the kernel; nil if it can
}

// Accel picks the qemu accelerator for VMs that boot kernel: want if it is
// "kvm" or "tcg", else ("") KVM if /dev/kvm opens and kernel, booted under
// it, prints its banner within 5 s, and TCG (software emulation)
// otherwise. A /dev/kvm that opens is not enough: some machines offer a KVM
// that runs only specially built guests (PVM, which why names). why says
// how it was decided. The probe runs once per kernel and process.
func Accel(ctx context.Context, want, kernel string) (accel, why string, err error) {
	switch want {
	case "kvm", "tcg":
		return want, "asked for", nil
	case "":
	default:
		return "", "", fmt.Errorf("accelerator %q: want kvm, tcg or empty for automatic", want)
	}
	p, _ := kvmProbes.LoadOrStore(kernel, &kvmProbe{})
	probe := p.(*kvmProbe)
	probe.once.Do(func() {
		probe.err = probeKVM(ctx, kernel)
		if probe.err != nil && kvmIsPVM() {
			probe.err = fmt.Errorf("%w; this machine's KVM is PVM (kvm_pvm, /sys/module/kvm_pvm), which runs only kernels built as PVM guests at speed and emulates the rest one instruction at a time", probe.err)
		}
	})
	if probe.err != nil {
		return "tcg", "KVM is not usable: " + probe.err.Error(), nil
	}
	return "kvm", "a kernel boots under KVM", nil
}

// probeKVM boots kernel under KVM, without disks, until it prints its
// banner on the serial console.
func probeKVM(ctx context.Context, kernel string) error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	f.Close()
	dir, err := os.MkdirTemp("", "nshost-kvm-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console")
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin, "-nodefaults", "-no-user-config", "-display", "none",
		"-accel", "kvm", "-m", "256", "-no-reboot", "-serial", "file:"+console, "-monitor", "none",
		"-kernel", kernel, "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() != nil {
				return fmt.Errorf("a kernel under qemu -accel kvm printed nothing in %s (%s)", kvmProbeTimeout, firstLine(stderr.Bytes()))
			}
			return fmt.Errorf("qemu -accel kvm exited before the kernel printed anything: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
		case <-tick.C:
			if out, _ := os.ReadFile(console); bytes.Contains(out, []byte("Linux version")) {
				_ = cmd.Process.Kill()
				<-done
				return nil
			}
		}
	}
}

// kvmIsPVM reports whether /dev/kvm is PVM (pagetable-based virtual
// machine), a KVM module for machines that are themselves VMs without
// nested virtualization: a stock kernel, like the image's, hangs early
// under it.
func kvmIsPVM() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}

func firstLine(b []byte) string {
	b = bytes.TrimSpace(b)
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return "qemu said nothing"
	}
	return string(b)
}
