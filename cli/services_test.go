package cli

import (
	"bytes"
	"slices"
	"testing"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/google/go-cmp/cmp"
)

func TestNaturalCompare(t *testing.T) {
	for _, tt := range []struct {
		in, want []string
	}{
		{[]string{"host10", "host2", "host1"}, []string{"host1", "host2", "host10"}},
		{[]string{"b", "a10", "a9", "a"}, []string{"a", "a9", "a10", "b"}},
		{[]string{"h01", "h1", "h001"}, []string{"h001", "h01", "h1"}},
		{[]string{"x99999999999", "x2"}, []string{"x2", "x99999999999"}},
	} {
		got := slices.SortedFunc(slices.Values(tt.in), naturalCompare)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("sorted %v (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestPrintCatalog(t *testing.T) {
	st := clusterstatus.Status{
		Rules: []string{"pastiche -> pastiche (horde)"},
		Peers: []clusterstatus.Peer{
			{Name: "h10", Endpoints: []clusterstatus.Service{{Service: "pastiche", ID: "pastiche@h10", Address: "203.0.113.3:7450"}},
				Clients: []clusterstatus.Service{{Service: "pastiche", ID: "pastiche@h10"}}},
			{Name: "h2", Endpoints: []clusterstatus.Service{{Service: "pastiche", ID: "pastiche@h2", Address: "203.0.113.2:7450"}},
				Clients: []clusterstatus.Service{{Service: "pastiche", ID: "pastiche@h2"}, {Service: "registry", ID: "registry@h2"}}},
		},
	}
	var out bytes.Buffer
	printCatalog(&out, catalogOf(st))
	want := `SERVICE   PORT  ENDPOINTS  CLIENTS  NODES
pastiche  7450  2          2        h2 h10
registry  -     0          1        h2

rules:
  pastiche -> pastiche (horde)
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("catalog (-want +got):\n%s", diff)
	}
}
