package rules

import (
	"fmt"
	"slices"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/yamlfile"
	"gopkg.in/yaml.v3"
)

// Limits of a rules file. They keep what the coordinator stores, sends to
// every peer and evaluates on every change small.
const (
	// MaxFileSize is the size of a rules file in bytes.
	MaxFileSize = 128 << 10
	// MaxServices is the number of custom services a file may declare.
	MaxServices = 256
	// MaxRules is the number of rules of a file, built-in ones aside.
	MaxRules = 1024
)

// Parse parses a rules file (format in the package documentation).
// name is the file name used in error messages. Every problem is reported
// as "<name>:<line>: <what>"; when there are several, the error joins them
// all, in file order.
func Parse(name string, data []byte) (Rules, error) {
	if len(data) > MaxFileSize {
		return Rules{}, fmt.Errorf("%s: %d bytes: a rules file may have at most %d", name, len(data), MaxFileSize)
	}
	root, err := yamlfile.Decode(name, data)
	if err != nil {
		return Rules{}, err
	}
	if root == nil {
		return Rules{}, fmt.Errorf("%s: empty rules file (want a mapping with key \"rules\")", name)
	}
	p := &parser{Checker: yamlfile.Checker{Name: name}}
	r := p.file(root)
	if err := p.Err(); err != nil {
		return Rules{}, err
	}
	return r, nil
}

// parser collects every error of one file.
type parser struct {
	yamlfile.Checker
}

var topKeys = []string{"services", "rules"}

func (p *parser) file(root *yaml.Node) Rules {
	top := p.Fields(root, "", "key", topKeys)
	if top == nil {
		return Rules{}
	}
	if p.tooMany(top["services"], "services", MaxServices) || p.tooMany(top["rules"], "rules", MaxRules) {
		return Rules{} // nothing else is checked
	}
	var r Rules
	if n := top["services"]; n != nil {
		r.declared = p.services(n)
	}
	n := top["rules"]
	if n == nil {
		p.Errorf(root, "missing key \"rules\"")
		return r
	}
	r.rules = p.rules(n, r.declared)
	r.scopes = make(map[pair]Scope, len(r.rules))
	for _, rule := range r.rules {
		r.scopes[pair{rule.Client, rule.Service}] = rule.Scope
	}
	return r
}

// tooMany reports (and records) a list of more than limit items under key.
func (p *parser) tooMany(n *yaml.Node, key string, limit int) bool {
	if n == nil || n.Kind != yaml.SequenceNode || len(n.Content) <= limit {
		return false
	}
	p.Errorf(n.Content[limit], "%s: more than %d (the limit of a rules file)", key, limit)
	return true
}

func (p *parser) services(n *yaml.Node) []string {
	items, _ := p.Seq(n, "services")
	var declared []string
	lines := make(map[string]int)
	for _, item := range items {
		s, ok := p.Str(item, "services")
		switch {
		case !ok:
		case !serviceid.Valid(s):
			p.Errorf(item, "services: invalid service name %q (want %s)", s, serviceid.Pattern)
		case serviceid.IsBuiltin(s):
			p.Errorf(item, "services: %q is built in", s)
		case lines[s] != 0:
			p.Errorf(item, "services: duplicate %q (first at line %d)", s, lines[s])
		default:
			declared, lines[s] = append(declared, s), item.Line
		}
	}
	return declared
}

func (p *parser) rules(n *yaml.Node, declared []string) []Rule {
	items, _ := p.Seq(n, "rules")
	var rules []Rule
	lines := make(map[pair]int)
	for _, item := range items {
		rule, ok := p.rule(item, declared)
		if !ok {
			continue
		}
		k := pair{rule.Client, rule.Service}
		if s, builtin := builtinScopes[k]; builtin {
			p.Errorf(item, "rule: %s -> %s is a built-in rule (scope %s) and cannot be changed", k.client, k.service, s)
			continue
		}
		if first := lines[k]; first != 0 {
			p.Errorf(item, "rule: duplicate rule %s -> %s (first at line %d)", k.client, k.service, first)
			continue
		}
		rules, lines[k] = append(rules, rule), item.Line
	}
	return rules
}

var ruleFields = []string{"client", "service", "scope"}

func (p *parser) rule(n *yaml.Node, declared []string) (Rule, bool) {
	f := p.Fields(n, "rule: ", "field", ruleFields)
	if f == nil {
		return Rule{}, false
	}
	ok := true
	for _, name := range ruleFields {
		if f[name] == nil {
			p.Errorf(n, "rule: missing field %q", name)
			ok = false
		}
	}
	if !ok {
		return Rule{}, false
	}
	client, okClient := p.serviceRef(f["client"], "client", declared)
	service, okService := p.serviceRef(f["service"], "service", declared)
	scope, okScope := p.scope(f["scope"])
	return Rule{Client: client, Service: service, Scope: scope}, okClient && okService && okScope
}

// serviceRef checks a rule's client or service field.
func (p *parser) serviceRef(n *yaml.Node, field string, declared []string) (string, bool) {
	s, ok := p.Str(n, "rule: "+field)
	switch {
	case !ok:
		return "", false
	case !serviceid.Valid(s):
		p.Errorf(n, "rule: %s: invalid service name %q (want %s)", field, s, serviceid.Pattern)
		return "", false
	case !serviceid.IsBuiltin(s) && !slices.Contains(declared, s):
		p.Errorf(n, "rule: %s: unknown service %q (not built in and not declared in services)", field, s)
		return "", false
	}
	return s, true
}

func (p *parser) scope(n *yaml.Node) (Scope, bool) {
	s, ok := p.Str(n, "rule: scope")
	if !ok {
		return "", false
	}
	switch sc := Scope(s); sc {
	case ScopeHorde, ScopeCluster:
		return sc, true
	}
	p.Errorf(n, "rule: bad scope %q (want %s or %s)", s, ScopeHorde, ScopeCluster)
	return "", false
}
