// Package rules parses the cluster's connectivity rules: which service's
// clients may call which service's endpoints, within a horde or across the
// cluster. It is pure logic over bytes; the steward applies the rules to
// the service records.
//
// # Rules file
//
// The connectivity rules are a YAML file:
//
//	# fabric connectivity rules
//	services: [billing, ledger]   # optional: custom service names
//	rules:
//	  - {client: pastiche, service: pastiche, scope: horde}
//	  - client: billing
//	    service: ledger
//	    scope: cluster
//
// Top-level keys:
//
//   - services (optional): a list of custom service names, beyond the
//     built-in ones (reeve, steward, registry, fabric-admin, pastiche).
//     Each must be a valid name, not built in, and listed once.
//   - rules (required; "rules: []" for none): a list of rules. Each rule
//     has exactly the three fields client, service and scope, and lets
//     clients of service client call endpoints of service service.
//     Both must be built-in or declared services. Scope is "horde" (the
//     client's node and the endpoint's node are in the same horde) or
//     "cluster" (any nodes). A (client, service) pair appears at most once.
//
// These rules always apply and the file can neither repeat nor change them:
//
//	{client: reeve, service: steward, scope: cluster}          # reeves talk to the steward
//	{client: registry, service: reeve, scope: cluster}         # the registration callback
//	{client: fabric-admin, service: pastiche, scope: cluster}  # admin file sends relayed by the coordinator
//
// When no file is given, the rules are DefaultRulesYAML:
//
//	rules: [{client: pastiche, service: pastiche, scope: horde}]
//
// Nothing is silently ignored: an unknown key or field, a missing field, a
// value of the wrong YAML type, a bad scope, an invalid, unknown or
// duplicate service, a duplicate rule, an alias, or a second YAML document
// is an error naming the file and line, e.g.
//
//	rules.yaml:4: rule: unknown field "scop" (want client, service, scope)
package rules
