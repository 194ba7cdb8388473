package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/fabricmesh/fabric/internal/atomicfile"
)

// The files of a running `fabric vpn up`, in the admin directory next to
// the bundle: one VPN per bundle, and the bundle's owner finds them.
const (
	vpnPIDFile   = "vpn.pid"
	vpnStateFile = "vpn.state"
	vpnLogFile   = "vpn.log"
)

// vpnState is vpn.state: what the daemon does, for `fabric vpn status`
// and `fabric vpn down`. It holds no secret.
type vpnState struct {
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"startedAt"`
	Interface string    `json:"interface"`
	// Backend is kernel or userspace (wireguard-go in the daemon).
	Backend    string `json:"backend"`
	AdminVPNIP string `json:"adminVPNIP"`
	ListenPort int    `json:"listenPort"`
	// WGEndpoint is where the daemon told the coordinator its peers reach
	// it ("": nowhere, it roams).
	WGEndpoint string `json:"wgEndpoint"`
	// Coordinator is the coordinator whose watch is open ("": none).
	Coordinator string `json:"coordinator"`
	// Revision is the cluster revision applied (0: none from a watch yet;
	// the peers are the cluster status's).
	Revision  uint64         `json:"revision"`
	LastError string         `json:"lastError,omitempty"`
	UpdatedAt time.Time      `json:"updatedAt"`
	Peers     []vpnStatePeer `json:"peers"`
}

// vpnStatePeer is one peer the daemon configured.
type vpnStatePeer struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	VPNIP      string `json:"vpnIP"`
	WGPubKey   string `json:"wgPubKey"`
	WGEndpoint string `json:"wgEndpoint,omitempty"`
}

func writeVPNState(dir string, st vpnState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, vpnStateFile), append(data, '\n'), privateFileMode); err != nil {
		return fmt.Errorf("writing the vpn state: %w", err)
	}
	return nil
}

// readVPNState reads vpn.state; fs.ErrNotExist when there is none.
func readVPNState(dir string) (vpnState, error) {
	var st vpnState
	data, err := os.ReadFile(filepath.Join(dir, vpnStateFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("vpn state %s is not valid JSON: %w", filepath.Join(dir, vpnStateFile), err)
	}
	return st, nil
}

// pidLock is vpn.pid held by the running daemon: its lock, not the PID in
// it, says whether a daemon runs, so a PID reused by another process is
// never taken for it.
type pidLock struct{ f *os.File }

// errVPNRunning is returned by lockPID while another daemon holds the lock.
var errVPNRunning = errors.New("fabric vpn is already up")

// lockPID takes vpn.pid for this process and writes its PID there.
func lockPID(dir string) (*pidLock, error) {
	f, err := os.OpenFile(filepath.Join(dir, vpnPIDFile), os.O_RDWR|os.O_CREATE, privateFileMode)
	if err != nil {
		return nil, fmt.Errorf("opening the pid file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := runningVPN(dir)
			return nil, fmt.Errorf("%w (pid %d); 'fabric vpn down' first", errVPNRunning, pid)
		}
		return nil, fmt.Errorf("locking the pid file: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the pid file: %w", err)
	}
	return &pidLock{f: f}, nil
}

// release removes vpn.pid and drops the lock.
func (l *pidLock) release() {
	os.Remove(l.f.Name())
	l.f.Close()
}

// runningVPN returns the PID of the daemon that holds vpn.pid's lock, or 0
// when none does.
func runningVPN(dir string) (int, error) {
	f, err := os.Open(filepath.Join(dir, vpnPIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("opening the pid file: %w", err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return 0, nil // a daemon that died left it
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return 0, fmt.Errorf("checking the pid file's lock: %w", err)
	}
	data, err := os.ReadFile(f.Name())
	if err != nil {
		return 0, fmt.Errorf("reading the pid file: %w", err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds no PID", f.Name())
	}
	return pid, nil
}
