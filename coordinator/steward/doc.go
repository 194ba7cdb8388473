// Package steward decides, from the service records and the connectivity
// rules, what each node's reeve may know: the whitelist of its local
// endpoints (which clients may call them, with their public keys), the
// endpoints its local clients may use, and the catalog of services they may
// use. Following least privilege, a node's view holds only what concerns
// its own endpoints and clients. The package is pure logic: it parses rules
// from bytes and computes views; storing records and delivering views is
// done elsewhere.
//
// # Names
//
// A service is named [a-z][a-z0-9-]{0,31}. A client or an endpoint is
// identified as "<service>@<node>" (node names are unique in the cluster),
// e.g. "pastiche@h3"; a client's ID is also its http-signature keyId. An
// endpoint's address is "<node VPN IP>:<port>".
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
//
// # Views
//
// Rules.View computes one node's View from the node, endpoint and client
// records; it is a pure function with a deterministic output order. A
// client is never paired with the endpoint of its own service on its own
// node (a pastiche does not send to itself), so under the default rules a
// pastiche client gets exactly the other pastiche endpoints of its horde.
// Other pairs on the same node are allowed. Every entry has a Key, Diff
// computes the change between two views, and View.Apply replays it.
package steward
