package nshost

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// mountScript gives the command a private /run/wireguard: `ip netns exec`
// has already put it in a mount namespace of its own (slave propagation), so
// the bind mount is seen only by this command and its children.
// $1 is the host's directory to mount; the rest is the command to exec.
const mountScript = `d=$1; shift; mount --bind "$d" ` + wireguardRun + ` && exec "$@"`

// Host is one machine of the lab: a network namespace whose eth0 is on the
// lab's bridge, a directory, and a private /run/wireguard.
type Host struct {
	lab        *Lab
	name       string
	ns         string
	ip         netip.Addr
	dir        string
	wgDir      string
	bridgePort string   // the veth end on the bridge, in the switch namespace
	vm         *vmState // non-nil for a virtual machine (AddVMs)
	ready      bool     // guarded by lab.mu
}

// Name returns the host's name as given to AddHost.
func (h *Host) Name() string { return h.name }

// IP returns the host's underlay address (on eth0).
func (h *Host) IP() netip.Addr { return h.ip }

// Dir returns the host's directory, WorkDir/<name>. It holds the logs of
// started processes and run-wireguard, mounted on /run/wireguard.
func (h *Host) Dir() string { return h.dir }

// Namespace returns the name of the host's network namespace ("" for a VM).
func (h *Host) Namespace() string { return h.ns }

func (h *Host) String() string { return "host " + h.name }

// AddHost creates a host: a namespace with lo up and eth0 (a veth whose
// other end is on the bridge) holding the next free underlay address.
func (l *Lab) AddHost(ctx context.Context, name string) (*Host, error) {
	hs, err := l.AddHosts(ctx, 1, func(int) string { return name })
	if err != nil {
		return nil, err
	}
	return hs[0], nil
}

// AddHosts creates n hosts concurrently, named namef(0..n-1) (nil: host0,
// host1, ...), with addresses in that order. On error the hosts that were
// made stay in the lab; Close removes them all.
func (l *Lab) AddHosts(ctx context.Context, n int, namef func(i int) string) ([]*Host, error) {
	if namef == nil {
		namef = func(i int) string { return "host" + strconv.Itoa(i) }
	}
	l.life.RLock()
	defer l.life.RUnlock()
	if l.closed {
		return nil, errors.New("adding hosts: lab is closed")
	}
	hs, err := l.reserve(n, namef)
	if err != nil {
		return nil, fmt.Errorf("adding hosts: %w", err)
	}
	err = forEach(len(hs), func(i int) error { return l.create(ctx, hs[i]) })
	if err != nil {
		return nil, err
	}
	return hs, nil
}

// reserve checks the names and assigns names, addresses and directories,
// all or nothing.
func (l *Lab) reserve(n int, namef func(i int) string) ([]*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	taken := make(map[string]bool)
	for _, h := range l.hosts {
		taken[h.name] = true
	}
	if l.nextOctet+n-1 > lastHostOctet {
		return nil, fmt.Errorf("underlay %s is full: %d hosts exist, %d more requested", l.cfg.Underlay, len(l.hosts), n)
	}
	hs := make([]*Host, n)
	for i := range n {
		name := namef(i)
		if err := checkHostName(name); err != nil {
			return nil, err
		}
		if taken[name] {
			return nil, fmt.Errorf("host %s already exists", name)
		}
		taken[name] = true
		hs[i] = l.newHost(name, l.nextOctet+i)
	}
	l.nextOctet += n
	l.hosts = append(l.hosts, hs...)
	return hs, nil
}

func checkHostName(name string) error {
	if !hostNameRE.MatchString(name) {
		return fmt.Errorf("invalid host name %q: want 1-32 letters, digits, '_' or '-', starting with a letter or digit", name)
	}
	if name == switchName {
		return fmt.Errorf("invalid host name %q: reserved for the switch", name)
	}
	return nil
}

func (l *Lab) newHost(name string, octet int) *Host {
	a := l.cfg.Underlay.Addr().As4()
	a[3] = byte(octet)
	dir := filepath.Join(l.cfg.WorkDir, name)
	return &Host{
		lab:        l,
		name:       name,
		ns:         l.cfg.Prefix + "-" + name,
		ip:         netip.AddrFrom4(a),
		dir:        dir,
		wgDir:      filepath.Join(dir, "run-wireguard"),
		bridgePort: "v" + strconv.Itoa(octet),
	}
}

// create makes a reserved host's directory, namespace and links.
func (l *Lab) create(ctx context.Context, h *Host) error {
	if err := l.createHost(ctx, h); err != nil {
		return fmt.Errorf("creating host %s: %w", h.name, err)
	}
	l.mu.Lock()
	h.ready = true
	l.mu.Unlock()
	l.log.Info("host added", "host", h.name, "ip", h.ip, "netns", h.ns)
	return nil
}

func (l *Lab) createHost(ctx context.Context, h *Host) error {
	if err := os.MkdirAll(h.wgDir, 0o700); err != nil {
		return err
	}
	if err := l.addNamespace(ctx, h.ns); err != nil {
		return err
	}
	// The veth is made in the switch namespace, already on the bridge, with
	// its peer moved straight into the host: the root namespace never sees it.
	err := runIP(ctx, "-n", l.switchNS, "link", "add", h.bridgePort, "master", bridgeName, "up",
		"type", "veth", "peer", "name", hostLinkName, "netns", h.ns)
	if err != nil {
		return err
	}
	bits := strconv.Itoa(l.cfg.Underlay.Bits())
	return runIPBatch(ctx, h.ns,
		"link set lo up",
		"addr add "+h.ip.String()+"/"+bits+" dev "+hostLinkName,
		"link set "+hostLinkName+" up",
	)
}

// Command returns a command that runs name inside the host: in its network
// namespace, with the host's private /run/wireguard. ctx kills it as
// exec.CommandContext does; the PID is that of the command itself. On a VM
// the command runs as root over ssh from VMConfig.SSHFrom, and the PID is
// that of ssh.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", h.wrap(name, args)...)
}

// wrap returns the ip(8) arguments that run name with args inside the host.
// Both ip netns exec and sh exec in place, so the PID stays the same.
func (h *Host) wrap(name string, args []string) []string {
	if h.vm != nil {
		return h.sshArgs(name, args)
	}
	return append([]string{"netns", "exec", h.ns, "sh", "-c", mountScript, "nshost", h.wgDir, name}, args...)
}

// Run runs a command inside the host and returns its combined output. Its
// error names the host, the command and includes the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("host %s: %w", h.name, commandError(commandLine(name, args), err, out))
	}
	return string(out), nil
}

// AddAddress gives h another address of the lab's underlay, beside its
// own, for programs that must connect from several sources. The address
// must not be another host's.
func (h *Host) AddAddress(ctx context.Context, ip netip.Addr) error {
	if !h.lab.cfg.Underlay.Contains(ip) {
		return fmt.Errorf("adding %s to %s: not in the underlay %s", ip, h.name, h.lab.cfg.Underlay)
	}
	for _, other := range h.lab.Hosts() {
		if other.ip == ip {
			return fmt.Errorf("adding %s to %s: it is %s's address", ip, h.name, other.name)
		}
	}
	return runIPBatch(ctx, h.ns, "addr add "+ip.String()+"/"+strconv.Itoa(h.lab.cfg.Underlay.Bits())+" dev "+hostLinkName)
}
