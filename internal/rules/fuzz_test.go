package rules_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/google/go-cmp/cmp"
)

// FuzzParse: any file parses or is refused with errors that name the file
// at a line; what parses stays within the limits, every rule in force is
// between known services and is allowed, and a second parse gives the same
// rules.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		lines("rules:", "  - {client: pastiche, service: pastiche, scope: horde}"),
		lines("services: [billing, ledger]", "rules:", "  - {client: billing, service: ledger, scope: cluster}", "  - client: ledger", "    service: billing", "    scope: horde"),
		lines("rules: []"),
		lines("rules:", "  - {client: pastiche, service: pastiche, scop: cluster}"),
		lines("services: [reeve]", "rules: []"),
		lines("services: &a [x, *a]", "rules: []"),
		lines("rules:", "  - {client: x, service: y, scope: horde}"),
		lines("rules:", "  - {client: pastiche, service: pastiche, scope: horde}", "  - {client: pastiche, service: pastiche, scope: cluster}"),
		"- a\n- b\n",
		"rules: {",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := rules.Parse("rules.yaml", data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "rules.yaml:") {
					t.Fatalf("error line %q does not name the file (error %q)", line, err)
				}
			}
			return
		}
		services := r.Services()
		if n := len(services) - len(rules.DefaultRules().Services()); n > rules.MaxServices {
			t.Fatalf("%d services declared, more than %d", n, rules.MaxServices)
		}
		list := r.List()
		if n := len(list) - len(rules.BuiltinRules()); n > rules.MaxRules {
			t.Fatalf("%d rules, more than %d", n, rules.MaxRules)
		}
		for _, rule := range list {
			if !slices.Contains(services, rule.Client) || !slices.Contains(services, rule.Service) {
				t.Fatalf("rule %s names a service not in %v", rule, services)
			}
			if scope, ok := r.Allows(rule.Client, rule.Service); !ok || scope == "" {
				t.Fatalf("rule %s in force but Allows = %q, %v", rule, scope, ok)
			}
		}
		again, err := rules.Parse("rules.yaml", data)
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		if diff := cmp.Diff(list, again.List()); diff != "" {
			t.Fatalf("second parse gives other rules (-first +second):\n%s", diff)
		}
	})
}
