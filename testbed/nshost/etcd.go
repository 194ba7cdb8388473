package nshost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fabricmesh/fabric/testbed/etcdlab"
)

// Ports of an etcd member on a namespace host.
const (
	EtcdClientPort = 2379
	EtcdPeerPort   = 2380
)

// StartEtcd starts an etcd cluster of one member per host (etcdlab, the
// hosts' own IPs, ports 2379 and 2380), each member a process of its host
// with its log in the host's etcd.log, and waits until every member
// serves. The members' data is in /dev/shm when it is there (etcd's fsyncs
// cost nothing there; a lab's etcd need not survive the machine), else in
// the host's directory; the lab's Close stops the members and removes it.
// The cluster's own clients dial through the first host's namespace.
func StartEtcd(ctx context.Context, hosts []*Host) (*etcdlab.Cluster, error) {
	if len(hosts) == 0 {
		return nil, errors.New("etcd needs at least one host")
	}
	lab := hosts[0].lab
	cfg := etcdlab.Config{DialContext: hosts[0].DialContext, Logger: lab.log}
	for _, h := range hosts {
		dir, err := etcdDataDir(h)
		if err != nil {
			return nil, err
		}
		cfg.Members = append(cfg.Members, etcdlab.MemberConfig{
			Name: h.Name(), IP: h.IP(), ClientPort: EtcdClientPort, PeerPort: EtcdPeerPort, Dir: dir,
			Runner: etcdlab.RunnerFunc(func(name string, args ...string) (etcdlab.Process, error) {
				return h.Start(name, args...)
			}),
		})
	}
	c, err := etcdlab.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("starting etcd on %d namespace hosts: %w", len(hosts), err)
	}
	lab.OnClose(c.Close)
	return c, nil
}

// etcdDataDir makes the directory of h's etcd member.
func etcdDataDir(h *Host) (string, error) {
	dir, err := os.MkdirTemp("/dev/shm", h.ns+"-etcd-")
	if err != nil {
		dir = filepath.Join(h.Dir(), "etcd")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("etcd member on %s: %w", h.Name(), err)
		}
		return dir, nil
	}
	h.lab.OnClose(func() error { return os.RemoveAll(dir) })
	return dir, nil
}
