package netmgr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// callTimeout guards against a hung child; it is not an assertion on speed.
const callTimeout = time.Minute

// requireNetAdmin skips the test unless it can create namespaces and TUN
// devices.
func requireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and TUN devices")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: no TUN support: %v", err)
	}
	for _, tool := range []string{"ip", "wg", "ping", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testNamespace is a network namespace with its own /run/wireguard (a bind
// mount of wgDir inside each command's private mount namespace), so UAPI
// sockets of different namespaces never clash.
type testNamespace struct {
	name  string
	wgDir string
}

func newTestNamespace(t testing.TB, name string) testNamespace {
	t.Helper()
	if err := os.MkdirAll("/run/wireguard", 0o755); err != nil {
		t.Fatalf("creating mount point: %v", err)
	}
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("deleting namespace %s: %v\n%s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return testNamespace{name: name, wgDir: t.TempDir()}
}

// command runs argv in the namespace with its /run/wireguard.
func (ns testNamespace) command(argv ...string) *exec.Cmd {
	args := append([]string{"netns", "exec", ns.name, "sh", "-c",
		`mount --bind "$0" /run/wireguard && exec "$@"`, ns.wgDir}, argv...)
	return exec.Command("ip", args...)
}

func (ns testNamespace) run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := ns.command(argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", ns.name, strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// peerProc is a child process running one Manager in a namespace.
type peerProc struct {
	t      testing.TB
	ns     testNamespace
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	enc    *json.Encoder
	dec    *json.Decoder
	stderr bytes.Buffer // read only after Wait
	done   bool
}

func startPeerProc(t testing.TB, ns testNamespace) *peerProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &peerProc{t: t, ns: ns, cmd: ns.command(exe)}
	p.cmd.Env = append(os.Environ(), helperEnv+"=1")
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting helper in %s: %v", ns.name, err)
	}
	p.enc, p.dec = json.NewEncoder(p.stdin), json.NewDecoder(stdout)
	t.Cleanup(p.stop)
	return p
}

// call sends req and returns the response; a broken child fails the test.
func (p *peerProc) call(req request) response {
	p.t.Helper()
	guard := time.AfterFunc(callTimeout, func() { p.cmd.Process.Kill() })
	defer guard.Stop()
	var resp response
	if err := p.enc.Encode(req); err != nil {
		p.t.Fatalf("sending %s to helper in %s: %v", req.Op, p.ns.name, err)
	}
	if err := p.dec.Decode(&resp); err != nil {
		p.t.Fatalf("reading %s response from helper in %s: %v", req.Op, p.ns.name, err)
	}
	return resp
}

// do is call for requests that must succeed.
func (p *peerProc) do(req request) response {
	p.t.Helper()
	resp := p.call(req)
	if resp.Err != "" {
		p.t.Fatalf("%s in %s: %s", req.Op, p.ns.name, resp.Err)
	}
	return resp
}

// stop ends the child cleanly (EOF on stdin) and fails the test if it
// reported a problem (race, goroutine leak) on exit.
func (p *peerProc) stop() {
	if p.done {
		return
	}
	p.done = true
	p.stdin.Close()
	guard := time.AfterFunc(callTimeout, func() { p.cmd.Process.Kill() })
	defer guard.Stop()
	if err := p.cmd.Wait(); err != nil {
		p.t.Errorf("helper in %s exited: %v\n%s", p.ns.name, err, p.stderr.String())
	} else if p.t.Failed() {
		p.t.Logf("helper in %s log:\n%s", p.ns.name, p.stderr.String())
	}
}

// kill simulates a crash: the child dies without cleaning up.
func (p *peerProc) kill() {
	p.done = true
	// Kill before closing stdin: EOF would start a clean shutdown.
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("killing helper in %s: %v", p.ns.name, err)
	}
	_ = p.cmd.Wait() // "signal: killed"; Wait also closes stdin
}

// ping asserts that dst answers through the tunnel. The first packet also
// triggers the WireGuard handshake, so a few attempts are allowed.
func ping(t testing.TB, ns testNamespace, dst string) {
	t.Helper()
	var out []byte
	var err error
	for range 3 {
		out, err = exec.Command("ip", "netns", "exec", ns.name, "ping", "-c1", "-W2", dst).CombinedOutput()
		if err == nil {
			return
		}
	}
	t.Fatalf("ping %s from %s: %v\n%s", dst, ns.name, err, out)
}

// wgDump returns the peers `wg show <iface> dump` lists, as peerSpecs.
func wgDump(t testing.TB, ns testNamespace, iface string) []peerSpec {
	t.Helper()
	out := ns.run(t, "wg", "show", iface, "dump")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var peers []peerSpec
	for _, line := range lines[1:] { // the first line is the interface (with its private key)
		f := strings.Split(line, "\t")
		if len(f) != 8 {
			t.Fatalf("wg show %s dump: unexpected peer line with %d fields", iface, len(f))
		}
		p := peerSpec{PublicKey: f[0]}
		if f[2] != "(none)" {
			p.Endpoint = f[2]
		}
		if f[3] != "(none)" {
			p.AllowedIPs = strings.Split(f[3], ",")
			slices.Sort(p.AllowedIPs)
		}
		if f[7] != "off" {
			fmt.Sscan(f[7], &p.Keepalive)
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b peerSpec) int { return strings.Compare(a.PublicKey, b.PublicKey) })
	return peers
}

// linkExists reports whether iface exists in ns.
func linkExists(t testing.TB, ns testNamespace, iface string) bool {
	t.Helper()
	return exec.Command("ip", "-n", ns.name, "link", "show", "dev", iface).Run() == nil
}

// linkAddrs returns the global addresses of iface in ns, like "203.0.113.1/24".
func linkAddrs(t testing.TB, ns testNamespace, iface string) []string {
	t.Helper()
	out := run(t, "ip", "-n", ns.name, "-o", "addr", "show", "dev", iface, "scope", "global")
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		for i := range f {
			if (f[i] == "inet" || f[i] == "inet6") && i+1 < len(f) {
				addrs = append(addrs, f[i+1])
			}
		}
	}
	return addrs
}
