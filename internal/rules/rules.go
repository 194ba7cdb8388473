package rules

import (
	"fmt"
	"slices"

	"github.com/fabricmesh/fabric/internal/serviceid"
)

// Scope says which pairs of nodes a rule connects.
type Scope string

// Scopes.
const (
	// ScopeHorde connects a client and an endpoint whose nodes are in the
	// same horde. A node without a horde is in no horde.
	ScopeHorde Scope = "horde"
	// ScopeCluster connects a client and an endpoint on any nodes.
	ScopeCluster Scope = "cluster"
)

// Rule lets clients of service Client call endpoints of service Service
// when their nodes match Scope.
type Rule struct {
	Client  string
	Service string
	Scope   Scope
}

func (r Rule) String() string {
	return fmt.Sprintf("%s -> %s (%s)", r.Client, r.Service, r.Scope)
}

// BuiltinRules returns the rules that always apply, whatever the rules file
// says: reeves call the steward, the registry calls reeves back during
// registration, and the coordinator's fabric-admin client relays admin file
// sends to pastiche.
func BuiltinRules() []Rule {
	return []Rule{
		{Client: serviceid.Reeve, Service: serviceid.Steward, Scope: ScopeCluster},
		{Client: serviceid.Registry, Service: serviceid.Reeve, Scope: ScopeCluster},
		{Client: serviceid.FabricAdmin, Service: serviceid.Pastiche, Scope: ScopeCluster},
	}
}

// DefaultRulesYAML is the rules file in force when none is given: pastiche
// clients call pastiche endpoints in their horde.
const DefaultRulesYAML = "rules: [{client: pastiche, service: pastiche, scope: horde}]\n"

// DefaultRules returns the parsed DefaultRulesYAML.
func DefaultRules() Rules {
	r, err := Parse("default rules", []byte(DefaultRulesYAML))
	if err != nil {
		panic(fmt.Sprintf("steward: default rules do not parse: %v", err))
	}
	return r
}

// pair is a (client service, endpoint service) pair.
type pair struct{ client, service string }

var builtinScopes = func() map[pair]Scope {
	m := make(map[pair]Scope)
	for _, r := range BuiltinRules() {
		m[pair{r.Client, r.Service}] = r.Scope
	}
	return m
}()

// Rules is a parsed rules file together with the built-in rules. The zero
// Rules holds only the built-in services and rules. Rules is immutable and
// safe for concurrent use.
type Rules struct {
	declared []string // custom services, in file order
	rules    []Rule   // rules from the file, in file order
	scopes   map[pair]Scope
}

// Services returns every known service name, built-in and declared, sorted.
func (r Rules) Services() []string {
	s := append(serviceid.Builtin(), r.declared...)
	slices.Sort(s)
	return s
}

// List returns every rule in force: the built-in rules, then the file's
// rules in file order.
func (r Rules) List() []Rule {
	return append(BuiltinRules(), r.rules...)
}

// Allows returns the scope under which clients of service client may call
// endpoints of service service, and false when no rule allows it.
func (r Rules) Allows(client, service string) (Scope, bool) {
	p := pair{client, service}
	if s, ok := builtinScopes[p]; ok {
		return s, true
	}
	s, ok := r.scopes[p]
	return s, ok
}

// ByClient returns, for each client service, the rules it is the client of.
func (r Rules) ByClient() map[string][]Rule {
	m := make(map[string][]Rule)
	for _, rule := range r.List() {
		m[rule.Client] = append(m[rule.Client], rule)
	}
	return m
}

// ByService returns, for each endpoint service, the rules that call it.
func (r Rules) ByService() map[string][]Rule {
	m := make(map[string][]Rule)
	for _, rule := range r.List() {
		m[rule.Service] = append(m[rule.Service], rule)
	}
	return m
}

// ParseOrDefault parses a cluster's rules file; empty text means the
// default rules.
func ParseOrDefault(name, text string) (Rules, error) {
	if text == "" {
		return DefaultRules(), nil
	}
	if name == "" {
		name = "rules"
	}
	return Parse(name, []byte(text))
}
