package nshost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// AddVMPeers boots n VMs from the fabric image (see Lab.AddVMs), each with
// a config disk that makes its fabricd a peer of this cluster: fabricd.yaml
// with its name, horde and pubapi endpoint, and the cluster's bootstrap
// key. It returns once every VM's fabricd serves its pubapi.
func (f *Fabric) AddVMPeers(ctx context.Context, n int, namef func(i int) string, opts func(i int) PeerOptions, vm VMConfig) ([]*Host, error) {
	vm.SSHFrom = f.Admin
	index := map[string]int{}
	if namef == nil {
		namef = func(i int) string { return fmt.Sprintf("vm%d", i) }
	}
	for i := range n {
		index[namef(i)] = i
	}
	vm.Files = func(h *Host) (map[string][]byte, error) {
		o := PeerOptions{}
		if opts != nil {
			o = opts(index[h.Name()])
		}
		f.mu.Lock()
		f.peers[h] = o
		f.mu.Unlock()
		return f.vmPeerFiles(h, o)
	}
	hosts, err := f.Lab.AddVMs(ctx, n, namef, vm)
	if err != nil {
		return hosts, err
	}
	err = forEach(len(hosts), func(i int) error {
		return f.waitListening(ctx, hosts[i], hosts[i].QemuProcess())
	})
	return hosts, err
}

// vmPeerFiles are the fabric files of h's config disk.
func (f *Fabric) vmPeerFiles(h *Host, o PeerOptions) (map[string][]byte, error) {
	keyFile := o.KeyFile
	if keyFile == "" {
		keyFile = f.KeyFile
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("bootstrap key for %s: %w", h.Name(), err)
	}
	name := o.Name
	if name == "" {
		name = h.Name()
	}
	return map[string][]byte{
		"fabricd.yaml":  []byte(vmFabricdConfig(name, o.Horde, f.Endpoint(h), f.cfg.LogLevel)),
		"bootstrap.key": key,
	}, nil
}

// vmFabricdConfig is the fabricd.yaml of a VM peer.
func vmFabricdConfig(name, horde, listen, logLevel string) string {
	var b strings.Builder
	b.WriteString("# fabricd.yaml of a VM peer, written by testbed/nshost\n")
	fmt.Fprintf(&b, "state-dir: /var/lib/fabric\n")
	fmt.Fprintf(&b, "listen: %s\n", listen)
	fmt.Fprintf(&b, "bootstrap-key-file: /etc/fabric/bootstrap.key\n")
	fmt.Fprintf(&b, "name: %s\n", name)
	if horde != "" {
		fmt.Fprintf(&b, "horde: %s\n", horde)
	}
	fmt.Fprintf(&b, "log-level: %s\n", logLevel)
	return b.String()
}

// CheckKernelWireGuard proves that fabric0 on every VM of hosts is a kernel
// WireGuard interface (ip -d link shows type wireguard), not wireguard-go's
// TUN device, and that fabricd never fell back to wireguard-go.
func (f *Fabric) CheckKernelWireGuard(ctx context.Context, hosts []*Host) error {
	var errs []error
	for _, h := range hosts {
		if err := checkKernelWireGuard(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name(), err))
		}
	}
	return errors.Join(errs...)
}

func checkKernelWireGuard(ctx context.Context, h *Host) error {
	if h.vm == nil {
		return errors.New("not a VM")
	}
	link, err := h.Run(ctx, "ip", "-d", "-o", "link", "show", "dev", "fabric0")
	if err != nil {
		return err
	}
	if !strings.Contains(link, " wireguard ") {
		return fmt.Errorf("fabric0 is not a kernel wireguard link: %s", strings.TrimSpace(link))
	}
	log, err := h.Run(ctx, "journalctl", "-b", "-u", "fabricd", "-o", "cat", "--no-pager")
	if err != nil {
		return err
	}
	if strings.Contains(log, "using wireguard-go") {
		return errors.New("fabricd logged that it uses wireguard-go")
	}
	return nil
}
