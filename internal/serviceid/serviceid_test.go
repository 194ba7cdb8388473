package serviceid_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/serviceid"
)

func TestValidServiceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"pastiche", true},
		{"fabric-admin", true},
		{"a", true},
		{"a1-", true},
		{"a0123456789012345678901234567890", true},
		{"a01234567890123456789012345678901", false},
		{"", false},
		{"1a", false},
		{"-a", false},
		{"Pastiche", false},
		{"pas_tiche", false},
		{"pastiche@h1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := serviceid.Valid(tt.name); got != tt.ok {
				t.Errorf("Valid(%q) = %v, want %v", tt.name, got, tt.ok)
			}
		})
	}
}

func TestSplitID(t *testing.T) {
	tests := []struct {
		id, service, node, err string
	}{
		{id: "pastiche@h3", service: "pastiche", node: "h3"},
		{id: "fabric-admin@coord-1", service: "fabric-admin", node: "coord-1"},
		{id: "pastiche@a@b", service: "pastiche", node: "a@b"},
		{id: "pastiche", err: `id "pastiche": want <service>@<node>`},
		{id: "pastiche@", err: `id "pastiche@": empty node name`},
		{id: "@h3", err: `id "@h3": invalid service name "" (want [a-z][a-z0-9-]{0,31})`},
		{id: "Pastiche@h3", err: `id "Pastiche@h3": invalid service name "Pastiche" (want [a-z][a-z0-9-]{0,31})`},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			service, node, err := serviceid.Parse(tt.id)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("Parse(%q) error %v, want %q", tt.id, err, tt.err)
				}
				return
			}
			if err != nil || service != tt.service || node != tt.node {
				t.Fatalf("Parse(%q) = %q, %q, %v; want %q, %q", tt.id, service, node, err, tt.service, tt.node)
			}
			if got := serviceid.ID(service, node); got != tt.id {
				t.Errorf("ID(%q, %q) = %q, want %q", service, node, got, tt.id)
			}
		})
	}
}

// FuzzValid: Valid agrees with Pattern, the syntax documented to users.
func FuzzValid(f *testing.F) {
	for _, s := range []string{"", "a", "pastiche", "a-1", "1a", "A", "a_b", "-", strings.Repeat("a", 32), strings.Repeat("a", 33), "é"} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^` + serviceid.Pattern + `$`)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := serviceid.Valid(s), re.MatchString(s); got != want {
			t.Errorf("Valid(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
