package feed

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEachName(t *testing.T) {
	tests := []struct {
		name  string
		lists []sortedNames
		want  []string
	}{
		{name: "none", lists: nil, want: nil},
		{name: "empty lists", lists: []sortedNames{{}, nil}, want: nil},
		{name: "one list", lists: []sortedNames{{"a", "b", "c"}}, want: []string{"a", "b", "c"}},
		{name: "interleaved", lists: []sortedNames{{"a", "c", "e"}, {"b", "d"}}, want: []string{"a", "b", "c", "d", "e"}},
		{name: "duplicates across lists", lists: []sortedNames{{"b"}, {"a", "b", "c"}, {"c"}, {}}, want: []string{"a", "b", "c"}},
		{name: "same list twice", lists: []sortedNames{{"x", "y"}, {"x", "y"}}, want: []string{"x", "y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			eachName(tt.lists, func(n string) { got = append(got, n) })
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("eachName (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIndexKeepsNamesSorted: after random adds and deletes, every holder
// list is the sorted set of the names added and not deleted since, and
// empty lists and services are dropped.
func TestIndexKeepsNamesSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	idx := map[string]map[string]sortedNames{}
	want := map[string]map[string]map[string]bool{} // service -> horde -> names
	for range 5000 {
		service := []string{"pastiche", "web"}[r.IntN(2)]
		horde := []string{"", "blue", "red"}[r.IntN(3)]
		name := string(rune('a' + r.IntN(26)))
		if r.IntN(2) == 0 {
			add(idx, service, horde, name)
			if want[service] == nil {
				want[service] = map[string]map[string]bool{}
			}
			if want[service][horde] == nil {
				want[service][horde] = map[string]bool{}
			}
			want[service][horde][name] = true
		} else {
			del(idx, service, horde, name)
			delete(want[service][horde], name)
			if len(want[service][horde]) == 0 {
				delete(want[service], horde)
			}
			if len(want[service]) == 0 {
				delete(want, service)
			}
		}
	}
	wantLists := map[string]map[string]sortedNames{}
	for service, byHorde := range want {
		wantLists[service] = map[string]sortedNames{}
		for horde, names := range byHorde {
			wantLists[service][horde] = slices.Sorted(maps.Keys(names))
		}
	}
	if diff := cmp.Diff(wantLists, idx); diff != "" {
		t.Errorf("index (-want +got):\n%s", diff)
	}
	for service, byHorde := range idx {
		for horde, names := range byHorde {
			if !slices.IsSorted(names) {
				t.Errorf("%s/%s: names %v not sorted", service, horde, names)
			}
		}
	}
}
