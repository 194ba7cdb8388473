package etcdlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Local runs processes on this machine, with their output in
// Dir/<base name of the binary>.log.
type Local struct{ Dir string }

// Start implements Runner.
func (l Local) Start(name string, args ...string) (Process, error) {
	p := &localProcess{logPath: filepath.Join(l.Dir, filepath.Base(name)+".log"), exited: make(chan struct{})}
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the child has its own copy
	fmt.Fprintf(log, "--- etcdlab %s: starting %s %v\n", time.Now().Format(time.RFC3339Nano), name, args)
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

type localProcess struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

func (p *localProcess) PID() int                { return p.cmd.Process.Pid }
func (p *localProcess) Exited() <-chan struct{} { return p.exited }
func (p *localProcess) LogPath() string         { return p.logPath }

func (p *localProcess) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.exited
	return nil
}

func (p *localProcess) Stop(ctx context.Context) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return p.Kill()
	}
}

// StartLocal starts an etcd cluster of n members on free loopback ports,
// with data in a temporary directory, and stops it when the test ends.
// Without an etcd binary the test is skipped (RequireBinary).
func StartLocal(tb testing.TB, n int, tlsFiles *TLSFiles) *Cluster {
	tb.Helper()
	RequireBinary(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := StartLocalCluster(ctx, TempDir(tb), n, tlsFiles)
	if err != nil {
		tb.Fatalf("starting etcd: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("stopping etcd: %v", err)
		}
	})
	return c
}

// TempDir returns a directory for the data of a test's etcd, removed when
// the test ends: in /dev/shm when it is there, where etcd's fsyncs cost
// nothing (a test's etcd need not survive the machine), else the test's
// temporary directory.
func TempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "etcdlab-")
	if err != nil {
		return tb.TempDir()
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// RequireBinary skips the test when there is no etcd binary, except in
// CI (CI set), where it fails: .ci/run installs etcd-server.
func RequireBinary(tb testing.TB) {
	tb.Helper()
	if _, err := Binary(); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("CI needs etcd: %v", err)
		}
		tb.Skipf("skipping: %v", err)
	}
}

// StartLocalCluster starts an etcd cluster of n members on free loopback
// ports, each with its data and log in a directory of dir. The caller
// closes it.
func StartLocalCluster(ctx context.Context, dir string, n int, tlsFiles *TLSFiles) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfg := Config{TLS: tlsFiles}
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		mdir := filepath.Join(dir, name)
		if err := os.MkdirAll(mdir, 0o700); err != nil {
			return nil, err
		}
		cfg.Members = append(cfg.Members, MemberConfig{
			Name: name, IP: netip.MustParseAddr("127.0.0.1"), ClientPort: ports[2*i], PeerPort: ports[2*i+1],
			Dir: mdir, Runner: Local{Dir: mdir},
		})
	}
	return Start(ctx, cfg)
}

// freePorts returns n TCP ports of 127.0.0.1 that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
