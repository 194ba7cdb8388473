package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/fabricmesh/fabric/internal/serviceid"

	"gopkg.in/yaml.v3"
)

// Parse parses a rules file (format in the package documentation).
// name is the file name used in error messages. Every problem is reported
// as "<name>:<line>: <what>"; when there are several, the error joins them
// all, in file order.
func Parse(name string, data []byte) (Rules, error) {
	root, err := decodeOne(name, data)
	if err != nil {
		return Rules{}, err
	}
	p := &parser{name: name}
	r := p.file(root)
	if len(p.errs) > 0 {
		return Rules{}, errors.Join(p.errs...)
	}
	return r, nil
}

// decodeOne decodes the single YAML document of data and returns its root.
func decodeOne(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) || (err == nil && len(doc.Content) == 0) {
		return nil, fmt.Errorf("%s: empty rules file (want a mapping with key \"rules\")", name)
	}
	if err != nil {
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(name, err)
	default:
		return nil, fmt.Errorf("%s:%d: more than one YAML document", name, extra.Line)
	}
	return doc.Content[0], nil
}

var yamlErrorRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlParserProblems are the problems yaml.v3 (v3.0.1) reports from its
// parser, as opposed to its scanner. For those it reports the 0-based line
// where the enclosing construct starts, and no line at all for line 0.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found undefined tag handle":             true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// yamlError rewrites a yaml.v3 syntax error as "<name>:<line>: <what>",
// correcting yaml.v3's off-by-one line of parser errors. For those the
// line is where the enclosing construct starts: yaml.v3 loses the problem's
// own position.
func yamlError(name string, err error) error {
	m := yamlErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	line, problem := 0, m[2]
	if m[1] != "" {
		line, _ = strconv.Atoi(m[1])
	}
	if yamlParserProblems[problem] {
		line++
	}
	if line == 0 {
		return fmt.Errorf("%s: %s", name, problem)
	}
	return fmt.Errorf("%s:%d: %s", name, line, problem)
}

// parser collects every error of one file.
type parser struct {
	name string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s:%d: %s", p.name, n.Line, fmt.Sprintf(format, args...)))
}

// fields checks that n is a mapping with unique keys from allowed and
// returns the values by key. what names n in messages; it returns nil
// after reporting when n is not a mapping.
func (p *parser) fields(n *yaml.Node, what, field string, allowed []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%swant a mapping with %ss %s; got %s", what, field, strings.Join(allowed, ", "), describe(n))
		return nil
	}
	m := make(map[string]*yaml.Node)
	keyLines := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key, ok := k.Value, k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge"
		if !ok {
			key, ok = p.str(k, what+field)
		}
		switch {
		case !ok:
		case !slices.Contains(allowed, key):
			p.errorf(k, "%sunknown %s %q (want %s)", what, field, key, strings.Join(allowed, ", "))
		case keyLines[key] != 0:
			p.errorf(k, "%sduplicate %s %q (first at line %d)", what, field, key, keyLines[key])
		default:
			m[key], keyLines[key] = v, k.Line
		}
	}
	return m
}

// str returns the string value of a plain string scalar.
func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind == yaml.AliasNode {
		p.errorf(n, "%s: aliases are not supported", what)
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.errorf(n, "%s: want a string, got %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

// seq returns the items of a sequence.
func (p *parser) seq(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s: want a sequence, got %s", what, describe(n))
		return nil, false
	}
	return n.Content, true
}

var topKeys = []string{"services", "rules"}

func (p *parser) file(root *yaml.Node) Rules {
	top := p.fields(root, "", "key", topKeys)
	if top == nil {
		return Rules{}
	}
	var r Rules
	if n := top["services"]; n != nil {
		r.declared = p.services(n)
	}
	n := top["rules"]
	if n == nil {
		p.errorf(root, "missing key \"rules\"")
		return r
	}
	r.rules = p.rules(n, r.declared)
	r.scopes = make(map[pair]Scope, len(r.rules))
	for _, rule := range r.rules {
		r.scopes[pair{rule.Client, rule.Service}] = rule.Scope
	}
	return r
}

func (p *parser) services(n *yaml.Node) []string {
	items, _ := p.seq(n, "services")
	var declared []string
	lines := make(map[string]int)
	for _, item := range items {
		s, ok := p.str(item, "services")
		switch {
		case !ok:
		case !serviceid.Valid(s):
			p.errorf(item, "services: invalid service name %q (want %s)", s, serviceid.Pattern)
		case serviceid.IsBuiltin(s):
			p.errorf(item, "services: %q is built in", s)
		case lines[s] != 0:
			p.errorf(item, "services: duplicate %q (first at line %d)", s, lines[s])
		default:
			declared, lines[s] = append(declared, s), item.Line
		}
	}
	return declared
}

func (p *parser) rules(n *yaml.Node, declared []string) []Rule {
	items, _ := p.seq(n, "rules")
	var rules []Rule
	lines := make(map[pair]int)
	for _, item := range items {
		rule, ok := p.rule(item, declared)
		if !ok {
			continue
		}
		k := pair{rule.Client, rule.Service}
		if s, builtin := builtinScopes[k]; builtin {
			p.errorf(item, "rule: %s -> %s is a built-in rule (scope %s) and cannot be changed", k.client, k.service, s)
			continue
		}
		if first := lines[k]; first != 0 {
			p.errorf(item, "rule: duplicate rule %s -> %s (first at line %d)", k.client, k.service, first)
			continue
		}
		rules, lines[k] = append(rules, rule), item.Line
	}
	return rules
}

var ruleFields = []string{"client", "service", "scope"}

func (p *parser) rule(n *yaml.Node, declared []string) (Rule, bool) {
	f := p.fields(n, "rule: ", "field", ruleFields)
	if f == nil {
		return Rule{}, false
	}
	ok := true
	for _, name := range ruleFields {
		if f[name] == nil {
			p.errorf(n, "rule: missing field %q", name)
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
	s, ok := p.str(n, "rule: "+field)
	switch {
	case !ok:
		return "", false
	case !serviceid.Valid(s):
		p.errorf(n, "rule: %s: invalid service name %q (want %s)", field, s, serviceid.Pattern)
		return "", false
	case !serviceid.IsBuiltin(s) && !slices.Contains(declared, s):
		p.errorf(n, "rule: %s: unknown service %q (not built in and not declared in services)", field, s)
		return "", false
	}
	return s, true
}

func (p *parser) scope(n *yaml.Node) (Scope, bool) {
	s, ok := p.str(n, "rule: scope")
	if !ok {
		return "", false
	}
	switch sc := Scope(s); sc {
	case ScopeHorde, ScopeCluster:
		return sc, true
	}
	p.errorf(n, "rule: bad scope %q (want %s or %s)", s, ScopeHorde, ScopeCluster)
	return "", false
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return "an alias (aliases are not supported)"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return n.ShortTag() + " " + strconv.Quote(n.Value)
	}
	return "nothing"
}
