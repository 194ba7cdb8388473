package cli

import (
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/spf13/cobra"
)

// Catalog is the JSON of `fabric services -o json`: every service with its
// endpoints and clients, and the rules that connect them.
type Catalog struct {
	Services []CatalogService `json:"services"`
	Rules    []string         `json:"rules"`
}

// CatalogService is one service of the catalog.
type CatalogService struct {
	Service   string                  `json:"service"`
	Endpoints []clusterstatus.Service `json:"endpoints"`
	Clients   []clusterstatus.Service `json:"clients"`
}

func catalogOf(st clusterstatus.Status) Catalog {
	byName := map[string]*CatalogService{}
	get := func(name string) *CatalogService {
		if byName[name] == nil {
			byName[name] = &CatalogService{Service: name, Endpoints: []clusterstatus.Service{}, Clients: []clusterstatus.Service{}}
		}
		return byName[name]
	}
	for _, p := range st.Peers {
		for _, e := range p.Endpoints {
			get(e.Service).Endpoints = append(get(e.Service).Endpoints, e)
		}
		for _, c := range p.Clients {
			get(c.Service).Clients = append(get(c.Service).Clients, c)
		}
	}
	cat := Catalog{Rules: st.Rules, Services: []CatalogService{}}
	for _, s := range byName {
		cat.Services = append(cat.Services, *s)
	}
	slices.SortFunc(cat.Services, func(a, b CatalogService) int { return strings.Compare(a.Service, b.Service) })
	return cat
}

func newServicesCmd() *cobra.Command {
	return newReportCmd("services", "List the service catalog: every service's endpoints and clients, and the rules",
		catalogOf, printCatalog)
}

// printCatalog prints one line per service: its port, how many endpoints
// and clients it has and on which nodes (-o json has the addresses).
func printCatalog(out io.Writer, cat Catalog) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPORT\tENDPOINTS\tCLIENTS\tNODES")
	for _, s := range cat.Services {
		ports, nodes := map[string]bool{}, map[string]bool{}
		for _, e := range s.Endpoints {
			if _, port, err := net.SplitHostPort(e.Address); err == nil {
				ports[port] = true
			}
			nodes[nodeOf(e.ID)] = true
		}
		for _, c := range s.Clients {
			nodes[nodeOf(c.ID)] = true
		}
		port := strings.Join(slices.Sorted(maps.Keys(ports)), ",")
		if port == "" {
			port = "-"
		}
		names := slices.SortedFunc(maps.Keys(nodes), naturalCompare)
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.Service, port, len(s.Endpoints), len(s.Clients), strings.Join(names, " "))
	}
	tw.Flush()
	fmt.Fprintln(out, "\nrules:")
	for _, r := range cat.Rules {
		fmt.Fprintf(out, "  %s\n", r)
	}
}

// nodeOf is the node of a service ID, service@node.
func nodeOf(id string) string {
	_, node, _ := strings.Cut(id, "@")
	return node
}

// naturalCompare orders names with their trailing numbers as numbers:
// host2 before host10.
func naturalCompare(a, b string) int {
	pa, na := splitNumber(a)
	pb, nb := splitNumber(b)
	if c := strings.Compare(pa, pb); c != 0 || na == nb {
		if c == 0 {
			return strings.Compare(a, b)
		}
		return c
	}
	if na < nb {
		return -1
	}
	return 1
}

// splitNumber splits the trailing decimal number off s (-1 if none).
func splitNumber(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil || len(s)-i > 9 {
		return s, -1
	}
	return s[:i], n
}
