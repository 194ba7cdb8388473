package coordinator

import (
	"net/netip"

	"github.com/fabricmesh/fabric/coordinator/steward"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/rules"
)

// Catalog lists the cluster's rules and service records, built-in ones
// included, for status: the work is the number of records.
type Catalog struct {
	Registry interface {
		Snapshot() (uint64, []records.Peer, map[netip.Addr]records.Services)
	}
	Rules rules.Rules
}

// Records returns the rules in force and the service records views are
// computed from.
func (c Catalog) Records() (rs []string, endpoints []steward.Endpoint, clients []steward.Client) {
	_, peers, services := c.Registry.Snapshot()
	for _, r := range c.Rules.List() {
		rs = append(rs, r.String())
	}
	_, endpoints, clients = steward.Records(peers, services)
	return rs, endpoints, clients
}
