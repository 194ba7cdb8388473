package view

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSort(t *testing.T) {
	sorted := View{
		Whitelist: []WhitelistEntry{
			{Endpoint: "pastiche@a", Client: "pastiche@b"},
			{Endpoint: "pastiche@a", Client: "pastiche@c"},
			{Endpoint: "web@a", Client: "pastiche@b"},
		},
		Endpoints: []EndpointEntry{
			{Client: "pastiche@a", Service: "pastiche", Endpoint: "pastiche@b"},
			{Client: "pastiche@a", Service: "pastiche", Endpoint: "pastiche@c"},
			{Client: "pastiche@a", Service: "web", Endpoint: "web@b"},
		},
		Catalog: []CatalogEntry{{Client: "pastiche@a", Service: "pastiche"}, {Client: "pastiche@a", Service: "web"}},
	}
	reversed := func(v View) View {
		var out View
		for i := len(v.Whitelist) - 1; i >= 0; i-- {
			out.Whitelist = append(out.Whitelist, v.Whitelist[i])
		}
		for i := len(v.Endpoints) - 1; i >= 0; i-- {
			out.Endpoints = append(out.Endpoints, v.Endpoints[i])
		}
		for i := len(v.Catalog) - 1; i >= 0; i-- {
			out.Catalog = append(out.Catalog, v.Catalog[i])
		}
		return out
	}
	tests := []struct {
		name     string
		in, want View
	}{
		{name: "sorted", in: reversed(reversed(sorted)), want: sorted},
		{name: "reversed", in: reversed(sorted), want: sorted},
		{name: "empty", in: View{}, want: View{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Sort()
			if diff := cmp.Diff(tt.want, tt.in); diff != "" {
				t.Errorf("Sort (-want +got):\n%s", diff)
			}
		})
	}
}
