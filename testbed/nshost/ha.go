package nshost

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/etcdlab"
)

// HAConfig configures a cluster whose coordinators share its records in
// etcd (NewHA).
type HAConfig struct {
	Fabric FabricConfig
	// Etcd, Coordinators and Nodes are how many etcd members,
	// coordinators and nodes to run, each on a host of its own (etcd1...,
	// coord1..., node1...).
	Etcd, Coordinators, Nodes int
	// NodeOptions gives node i's fabricd options (nil: the defaults).
	NodeOptions func(i int) PeerOptions
}

// HA is a cluster on a Lab with several coordinators on etcd: the etcd
// members, the coordinators (started with --store, the cluster's records
// under a key prefix of the lab's name) and the nodes, all started and
// waiting for activation (Activate).
type HA struct {
	*Fabric
	Etcd                           *etcdlab.Cluster
	EtcdHosts, Coordinators, Nodes []*Host
	// Store is the coordinators' --store.
	Store string
	cfg   HAConfig
}

// NewHA starts etcd on cfg.Etcd hosts, then fabricd on the coordinators'
// and the nodes' hosts.
func NewHA(ctx context.Context, lab *Lab, cfg HAConfig) (*HA, error) {
	if cfg.Etcd < 1 || cfg.Coordinators < 1 || cfg.Nodes < 0 {
		return nil, fmt.Errorf("an HA cluster needs etcd members and coordinators (got %d and %d)", cfg.Etcd, cfg.Coordinators)
	}
	ha := &HA{cfg: cfg}
	var err error
	if ha.EtcdHosts, err = lab.AddHosts(ctx, cfg.Etcd, numbered("etcd")); err != nil {
		return nil, err
	}
	if ha.Etcd, err = StartEtcd(ctx, ha.EtcdHosts); err != nil {
		return nil, err
	}
	ha.Store = ha.Etcd.URL("fabric/" + lab.Prefix())
	if ha.Fabric, err = NewFabric(ctx, lab, cfg.Fabric); err != nil {
		return nil, err
	}
	ha.Coordinators, err = ha.AddPeers(ctx, cfg.Coordinators, numbered("coord"),
		func(int) PeerOptions { return PeerOptions{Store: ha.Store} })
	if err != nil {
		return nil, err
	}
	if ha.Nodes, err = ha.AddNodeHosts(ctx, cfg.Nodes); err != nil {
		return nil, err
	}
	return ha, nil
}

// numbered names hosts prefix1, prefix2, ...
func numbered(prefix string) func(int) string {
	return func(i int) string { return fmt.Sprintf("%s%d", prefix, i+1) }
}

// AddNodeHosts adds n more node hosts (named on from the last: node7,
// ...) with fabricd started, not activated; they join h.Nodes.
func (h *HA) AddNodeHosts(ctx context.Context, n int) ([]*Host, error) {
	first := len(h.Nodes)
	hosts, err := h.AddPeers(ctx, n, func(i int) string { return fmt.Sprintf("node%d", first+i+1) },
		func(i int) PeerOptions {
			if h.cfg.NodeOptions == nil {
				return PeerOptions{}
			}
			return h.cfg.NodeOptions(first + i)
		})
	h.Nodes = append(h.Nodes, hosts...)
	return hosts, err
}

// Activate activates the cluster with the first coordinator and the nodes,
// then adds the other coordinators (fabric coordinators add), and waits
// until every peer converged. It returns the CLI's output.
func (h *HA) Activate(ctx context.Context) (string, error) {
	var out strings.Builder
	o, err := h.Fabric.Activate(ctx, h.Coordinators[0], h.Nodes)
	out.WriteString(o)
	if err != nil {
		return out.String(), err
	}
	for _, c := range h.Coordinators[1:] {
		o, err := h.CLI(ctx, "coordinators", "add", h.Endpoint(c), "--admin-dir", h.AdminDir)
		out.WriteString(o)
		if err != nil {
			return out.String(), err
		}
	}
	o, err = h.Watch(ctx, len(h.Coordinators)+len(h.Nodes), 2*time.Minute, "pastiche")
	out.WriteString(o)
	return out.String(), err
}

// WaitStatus polls the cluster's status (through the first coordinator of
// the admin bundle that answers) until cond accepts it, and returns it;
// at timeout the error carries cond's last complaint.
func (f *Fabric) WaitStatus(ctx context.Context, timeout time.Duration, cond func(clusterstatus.Status) error) (clusterstatus.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		st, err := f.Status(ctx)
		if err == nil {
			if err = cond(st); err == nil {
				return st, nil
			}
		}
		if ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%w: %v", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PeerByName returns the status of the peer called name.
func PeerByName(st clusterstatus.Status, name string) (clusterstatus.Peer, bool) {
	for _, p := range st.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return clusterstatus.Peer{}, false
}

// NodesWatching returns nil once every active node of st is online,
// applied st's revision and watches one of the coordinators named, else an
// error naming those that do not.
func NodesWatching(st clusterstatus.Status, coordinators ...string) error {
	var not []string
	for _, p := range st.Peers {
		if p.Role != "node" || p.State != "active" {
			continue
		}
		if !slices.Contains(coordinators, p.Watching) || !p.Online || p.AppliedRevision != st.Revision {
			not = append(not, fmt.Sprintf("%s (watching %q, online %v, applied %d)", p.Name, p.Watching, p.Online, p.AppliedRevision))
		}
	}
	if len(not) > 0 {
		return fmt.Errorf("at revision %d, not every node watches %s and applied it: %s", st.Revision, strings.Join(coordinators, " or "), strings.Join(not, ", "))
	}
	return nil
}
