package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

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
	Service   string          `json:"service"`
	Endpoints []StatusService `json:"endpoints"`
	Clients   []StatusService `json:"clients"`
}

func catalogOf(st Status) Catalog {
	byName := map[string]*CatalogService{}
	get := func(name string) *CatalogService {
		if byName[name] == nil {
			byName[name] = &CatalogService{Service: name, Endpoints: []StatusService{}, Clients: []StatusService{}}
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
	var adminDir, output string
	cmd := &cobra.Command{
		Use:   "services [-o table|json]",
		Short: "List the service catalog: every service's endpoints and clients, and the rules",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			admin, err := loadAdminDir(adminDir)
			if err != nil {
				return err
			}
			st, err := fetchStatus(cmd.Context(), admin)
			if err != nil {
				return err
			}
			cat := catalogOf(st)
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(cat)
			}
			printCatalog(cmd.OutOrStdout(), cat)
			return nil
		},
	}
	cmd.Flags().StringVar(&adminDir, "admin-dir", defaultAdminDir, "admin bundle written by 'fabric activate'")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printCatalog(out io.Writer, cat Catalog) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tENDPOINTS\tCLIENTS")
	for _, s := range cat.Services {
		var eps, cls []string
		for _, e := range s.Endpoints {
			eps = append(eps, e.ID+" "+e.Address)
		}
		for _, c := range s.Clients {
			cls = append(cls, c.ID)
		}
		fmt.Fprintf(tw, "%s\t%d: %s\t%d: %s\n", s.Service, len(eps), strings.Join(eps, ", "), len(cls), strings.Join(cls, ", "))
	}
	tw.Flush()
	fmt.Fprintln(out, "\nrules:")
	for _, r := range cat.Rules {
		fmt.Fprintf(out, "  %s\n", r)
	}
}
