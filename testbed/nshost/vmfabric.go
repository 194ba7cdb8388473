package nshost

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
	fmt.Fprintf(&b, "listen: %s\n", listen)
	fmt.Fprintf(&b, "name: %s\n", name)
	if horde != "" {
		fmt.Fprintf(&b, "horde: %s\n", horde)
	}
	fmt.Fprintf(&b, "log-level: %s\n", logLevel)
	return b.String()
}

// CheckKernelWireGuard proves that fabricd on every VM of hosts runs
// internal/netmgr's kernel WireGuard path: fabric0 is a kernel WireGuard link
// (ip -d link shows type wireguard), not wireguard-go's TUN device, the
// wireguard module is loaded, fabricd holds no /dev/net/tun (wireguard-go
// would), and its journal of this boot never says it fell back to
// wireguard-go. None of it depends on fabricd's log level.
func (f *Fabric) CheckKernelWireGuard(ctx context.Context, hosts []*Host) error {
	var errs []error
	for _, h := range hosts {
		if err := checkKernelWireGuard(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// fabricdTUNFiles lists the files of the fabricd service's main process
// that are /dev/net/tun, and fails if it has none.
const fabricdTUNFiles = `pid=$(systemctl show --property MainPID --value fabricd)
[ "${pid:-0}" != 0 ] || { echo "fabricd is not running"; exit 1; }
for fd in /proc/$pid/fd/*; do [ "$(readlink "$fd")" = /dev/net/tun ] && echo "$fd"; done; true`

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
	if _, err := h.Run(ctx, "test", "-d", "/sys/module/wireguard"); err != nil {
		return fmt.Errorf("the wireguard module is not loaded: %w", err)
	}
	tun, err := h.Run(ctx, "sh", "-c", fabricdTUNFiles)
	if err != nil {
		return fmt.Errorf("fabricd's open files: %w", err)
	}
	if tun = strings.TrimSpace(tun); tun != "" {
		return fmt.Errorf("fabricd has /dev/net/tun open (%s): a wireguard-go device", strings.ReplaceAll(tun, "\n", ", "))
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

// NewSSHUserKey makes an ed25519 key pair for the SSH user name in the admin
// host's directory and returns its public key line, for a users file or
// `fabric users add --key`.
func (f *Fabric) NewSSHUserKey(ctx context.Context, name string) (string, error) {
	path := f.sshUserKeyPath(name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name+"@nshost", "-f", path); err != nil {
		return "", fmt.Errorf("making the SSH key of %s: %w", name, err)
	}
	pub, err := os.ReadFile(path + ".pub")
	return strings.TrimSpace(string(pub)), err
}

func (f *Fabric) sshUserKeyPath(name string) string {
	return filepath.Join(f.Admin.Dir(), "ssh-users", name)
}

// WriteUsersFile writes a users file (docs/ssh-users.md) giving each user
// of keys its key line, in the admin host's directory, and returns its path.
func (f *Fabric) WriteUsersFile(keys map[string]string) (string, error) {
	var b strings.Builder
	b.WriteString("users:\n")
	for _, name := range slices.Sorted(maps.Keys(keys)) {
		fmt.Fprintf(&b, "  - name: %s\n    keys: [%q]\n", name, keys[name])
	}
	path := filepath.Join(f.Admin.Dir(), "users.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// SSHAs logs in from the admin host to ip as the SSH user name, with the
// key NewSSHUserKey made, and runs args there. Its error says how ssh
// failed (Permission denied for a refused login).
func (f *Fabric) SSHAs(ctx context.Context, name, ip string, args ...string) (string, error) {
	argv := append(f.Lab.SSHOptions(f.sshUserKeyPath(name)), name+"@"+ip, "--")
	return f.Admin.Run(ctx, "ssh", append(argv, args...)...)
}
