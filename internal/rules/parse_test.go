package rules_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/serviceid"

	"github.com/google/go-cmp/cmp"

	"github.com/fabricmesh/fabric/internal/rules"
)

// lines joins its arguments as the lines of a file.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

func builtinPlus(rs ...rules.Rule) []rules.Rule {
	return append(rules.BuiltinRules(), rs...)
}

func TestParseRules(t *testing.T) {
	pp := rules.Rule{Client: "pastiche", Service: "pastiche", Scope: rules.ScopeHorde}
	builtins := serviceid.Builtin()
	tests := []struct {
		name     string
		file     string
		rules    []rules.Rule
		services []string
	}{
		{"default", rules.DefaultRulesYAML, builtinPlus(pp), builtins},
		{"empty rules", "rules: []\n", builtinPlus(), builtins},
		{"issue example", lines(
			"# fabric connectivity rules",
			"services: [billing, ledger]   # optional",
			"rules:",
			"  - {client: pastiche, service: pastiche, scope: horde}",
			"  - client: billing",
			"    service: ledger",
			"    scope: cluster",
		), builtinPlus(pp, rules.Rule{Client: "billing", Service: "ledger", Scope: rules.ScopeCluster}),
			[]string{"billing", "fabric-admin", "ledger", "pastiche", "reeve", "registry", "steward"}},
		{"rules before services, quoted strings", lines(
			"rules:",
			"- {client: \"ledger\", service: 'reeve', scope: cluster}",
			"- {client: pastiche, service: ledger, scope: horde}",
			"services:",
			"- ledger",
		), builtinPlus(
			rules.Rule{Client: "ledger", Service: "reeve", Scope: rules.ScopeCluster},
			rules.Rule{Client: "pastiche", Service: "ledger", Scope: rules.ScopeHorde},
		), []string{"fabric-admin", "ledger", "pastiche", "reeve", "registry", "steward"}},
		{"same pair both ways", lines(
			"rules:",
			"- {client: pastiche, service: reeve, scope: horde}",
			"- {client: reeve, service: pastiche, scope: horde}",
		), builtinPlus(
			rules.Rule{Client: "pastiche", Service: "reeve", Scope: rules.ScopeHorde},
			rules.Rule{Client: "reeve", Service: "pastiche", Scope: rules.ScopeHorde},
		), builtins},
		{"longest name", lines(
			"services: [a0123456789012345678901234567890]",
			"rules: [{client: a0123456789012345678901234567890, service: pastiche, scope: cluster}]",
		), builtinPlus(rules.Rule{Client: "a0123456789012345678901234567890", Service: "pastiche", Scope: rules.ScopeCluster}),
			[]string{"a0123456789012345678901234567890", "fabric-admin", "pastiche", "reeve", "registry", "steward"}},
		{"explicit document markers", "---\nrules: []\n...\n", builtinPlus(), builtins},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := rules.Parse("rules.yaml", []byte(tt.file))
			if err != nil {
				t.Fatalf("ParseRules: %v", err)
			}
			if diff := cmp.Diff(tt.rules, r.List()); diff != "" {
				t.Errorf("List() (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.services, r.Services()); diff != "" {
				t.Errorf("Services() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRulesErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string // the whole error; several lines when several errors
	}{
		{"empty file", "", "rules.yaml: empty rules file (want a mapping with key \"rules\")"},
		{"only comments", "# nothing\n", "rules.yaml: empty rules file (want a mapping with key \"rules\")"},
		{"syntax error", lines("rules:", "  - {client: pastiche", "services: []"),
			"rules.yaml:2: did not find expected ',' or '}'"},
		{"syntax error on first line", "{rules: [}\n", "rules.yaml:1: did not find expected node content"},
		{"syntax error in block", lines("rules:", "  - client: pastiche", "    service: pastiche", "   scope: horde"),
			"rules.yaml:2: did not find expected '-' indicator"},
		{"bad indentation", lines("rules: []", "  services: []"), "rules.yaml:2: did not find expected key"},
		{"scanner error", lines("rules:", "- {client: pastiche, service: pastiche, scope: horde}", "x: y: z"),
			"rules.yaml:3: mapping values are not allowed in this context"},
		{"tab indentation", "rules:\n\t- x\n", "rules.yaml:2: found character that cannot start any token"},
		{"two documents", lines("rules: []", "---", "rules: []"), "rules.yaml:2: more than one YAML document"},
		{"second document broken", lines("rules: []", "---", "rules: [", ""),
			"rules.yaml:5: did not find expected node content"},
		{"top level sequence", "- rules\n",
			"rules.yaml:1: want a mapping with keys services, rules; got a sequence"},
		{"top level scalar", "rules\n",
			"rules.yaml:1: want a mapping with keys services, rules; got !!str \"rules\""},
		{"unknown top key", lines("rules: []", "rule: []"),
			"rules.yaml:2: unknown key \"rule\" (want services, rules)"},
		{"non-string top key", lines("rules: []", "1: x"),
			"rules.yaml:2: key: want a string, got !!int \"1\""},
		{"duplicate top key", lines("rules: []", "services: []", "rules: []"),
			"rules.yaml:3: duplicate key \"rules\" (first at line 1)"},
		{"missing rules", lines("# header", "services: [billing]"), "rules.yaml:2: missing key \"rules\""},
		{"null rules", "rules:\n", "rules.yaml:1: rules: want a sequence, got null"},
		{"rules mapping", lines("rules:", "  client: pastiche"), "rules.yaml:2: rules: want a sequence, got a mapping"},
		{"services scalar", lines("services: billing", "rules: []"),
			"rules.yaml:1: services: want a sequence, got !!str \"billing\""},
		{"service not a string", lines("services: [7, [x]]", "rules: []"),
			"rules.yaml:1: services: want a string, got !!int \"7\"\nrules.yaml:1: services: want a string, got a sequence"},
		{"invalid declared service", lines("services:", "  - Billing", "  - a0123456789012345678901234567890x", "rules: []"),
			"rules.yaml:2: services: invalid service name \"Billing\" (want [a-z][a-z0-9-]{0,31})\n" +
				"rules.yaml:3: services: invalid service name \"a0123456789012345678901234567890x\" (want [a-z][a-z0-9-]{0,31})"},
		{"built-in declared", lines("services: [ledger, reeve]", "rules: []"), "rules.yaml:1: services: \"reeve\" is built in"},
		{"duplicate declared", lines("services:", "- ledger", "- ledger", "rules: []"),
			"rules.yaml:3: services: duplicate \"ledger\" (first at line 2)"},
		{"rule not a mapping", lines("rules:", "- pastiche"),
			"rules.yaml:2: rule: want a mapping with fields client, service, scope; got !!str \"pastiche\""},
		{"unknown field", lines("rules:", "- client: pastiche", "  service: pastiche", "  scop: horde"),
			"rules.yaml:4: rule: unknown field \"scop\" (want client, service, scope)\n" +
				"rules.yaml:2: rule: missing field \"scope\""},
		{"duplicate field", lines("rules:", "- client: pastiche", "  client: reeve", "  service: pastiche", "  scope: horde"),
			"rules.yaml:3: rule: duplicate field \"client\" (first at line 2)"},
		{"missing fields", lines("rules:", "- {client: pastiche}"),
			"rules.yaml:2: rule: missing field \"service\"\nrules.yaml:2: rule: missing field \"scope\""},
		{"empty rule", lines("rules:", "- {}"),
			"rules.yaml:2: rule: missing field \"client\"\nrules.yaml:2: rule: missing field \"service\"\nrules.yaml:2: rule: missing field \"scope\""},
		{"null field", lines("rules:", "- {client: pastiche, service: , scope: horde}"),
			"rules.yaml:2: rule: service: want a string, got null"},
		{"field not a string", lines("rules:", "- {client: [pastiche], service: pastiche, scope: true}"),
			"rules.yaml:2: rule: client: want a string, got a sequence\nrules.yaml:2: rule: scope: want a string, got !!bool \"true\""},
		{"bad scope", lines("rules:", "- {client: pastiche, service: pastiche, scope: global}"),
			"rules.yaml:2: rule: bad scope \"global\" (want horde or cluster)"},
		{"scope case matters", lines("rules:", "- {client: pastiche, service: pastiche, scope: Horde}"),
			"rules.yaml:2: rule: bad scope \"Horde\" (want horde or cluster)"},
		{"unknown service", lines("services: [ledger]", "rules:", "- {client: pastiche, service: ledgr, scope: horde}"),
			"rules.yaml:3: rule: service: unknown service \"ledgr\" (not built in and not declared in services)"},
		{"unknown client", lines("rules:", "- client: billing", "  service: pastiche", "  scope: cluster"),
			"rules.yaml:2: rule: client: unknown service \"billing\" (not built in and not declared in services)"},
		{"invalid service name in rule", lines("rules:", "- {client: Pastiche, service: pastiche, scope: horde}"),
			"rules.yaml:2: rule: client: invalid service name \"Pastiche\" (want [a-z][a-z0-9-]{0,31})"},
		{"duplicate rule", lines("rules:", "- {client: pastiche, service: pastiche, scope: horde}", "- {client: reeve, service: pastiche, scope: horde}", "- {client: pastiche, service: pastiche, scope: cluster}"),
			"rules.yaml:4: rule: duplicate rule pastiche -> pastiche (first at line 2)"},
		{"built-in rule repeated", lines("rules:", "- {client: reeve, service: steward, scope: cluster}"),
			"rules.yaml:2: rule: reeve -> steward is a built-in rule (scope cluster) and cannot be changed"},
		{"built-in rule narrowed", lines("rules:", "- {client: fabric-admin, service: pastiche, scope: horde}"),
			"rules.yaml:2: rule: fabric-admin -> pastiche is a built-in rule (scope cluster) and cannot be changed"},
		{"alias", lines("rules:", "- &pp {client: pastiche, service: pastiche, scope: horde}", "- *pp"),
			"rules.yaml:3: rule: want a mapping with fields client, service, scope; got an alias (aliases are not supported)"},
		{"alias value", lines("services: [&l ledger]", "rules:", "- {client: *l, service: pastiche, scope: horde}"),
			"rules.yaml:3: rule: client: aliases are not supported"},
		{"merge key", lines("rules:", "- {<<: {client: pastiche}, service: pastiche, scope: horde}"),
			"rules.yaml:2: rule: unknown field \"<<\" (want client, service, scope)\nrules.yaml:2: rule: missing field \"client\""},
		{"errors in several rules", lines(
			"services: [ledger]",
			"rules:",
			"- {client: pastiche, service: pastiche, scope: horde}",
			"- {client: ledger, service: bank, scope: cluster}",
			"- {client: ledger, service: pastiche, scope: everywhere}",
		), "rules.yaml:4: rule: service: unknown service \"bank\" (not built in and not declared in services)\n" +
			"rules.yaml:5: rule: bad scope \"everywhere\" (want horde or cluster)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rules.Parse("rules.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("ParseRules succeeded, want error %q", tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultRules(t *testing.T) {
	want := builtinPlus(rules.Rule{Client: "pastiche", Service: "pastiche", Scope: rules.ScopeHorde})
	if diff := cmp.Diff(want, rules.DefaultRules().List()); diff != "" {
		t.Errorf("DefaultRules().List() (-want +got):\n%s", diff)
	}
}

func TestZeroRulesHoldBuiltins(t *testing.T) {
	var r rules.Rules
	if diff := cmp.Diff(rules.BuiltinRules(), r.List()); diff != "" {
		t.Errorf("List() (-want +got):\n%s", diff)
	}
	if s, ok := r.Allows("registry", "reeve"); !ok || s != rules.ScopeCluster {
		t.Errorf("Allows(registry, reeve) = %q, %v; want cluster, true", s, ok)
	}
	if _, ok := r.Allows("pastiche", "pastiche"); ok {
		t.Errorf("Allows(pastiche, pastiche) allowed without rules")
	}
}

// TestParseRulesLimits: the regression test of the rules part of defect 6
// of issue 9 (a 3 MB rules file declaring 400,000 services was accepted),
// and the limits at their edge.
func TestParseRulesLimits(t *testing.T) {
	services := func(n int) string {
		var b strings.Builder
		b.WriteString("services:\n")
		for i := range n {
			fmt.Fprintf(&b, "- s%d\n", i)
		}
		return b.String()
	}
	ruleList := func(n int) string {
		var b strings.Builder
		b.WriteString("services: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x, y, z, aa, ab, ac, ad, ae, af]\nrules:\n")
		names := strings.Split("a b c d e f g h i j k l m n o p q r s t u v w x y z aa ab ac ad ae af", " ")
		for i := range n {
			fmt.Fprintf(&b, "- {client: %s, service: %s, scope: cluster}\n", names[i/32], names[i%32])
		}
		return b.String()
	}
	tests := []struct {
		name string
		file string
		want string // "" = accepted
	}{
		{"400,000 services in 3 MB", services(400000) + "rules: []\n",
			fmt.Sprintf("rules.yaml: %d bytes: a rules file may have at most 131072", len(services(400000)+"rules: []\n"))},
		{"256 services", services(rules.MaxServices) + "rules: []\n", ""},
		{"257 services", services(rules.MaxServices+1) + "rules: []\n", "rules.yaml:258: services: more than 256 (the limit of a rules file)"},
		{"1024 rules", ruleList(rules.MaxRules), ""},
		{"1025 rules", ruleList(rules.MaxRules) + "- {client: pastiche, service: pastiche, scope: horde}\n",
			"rules.yaml:1027: rules: more than 1024 (the limit of a rules file)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rules.Parse("rules.yaml", []byte(tt.file))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("Parse: %v, want %q", err, tt.want)
			}
		})
	}
}
