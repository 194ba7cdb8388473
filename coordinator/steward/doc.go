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
// The rules come from internal/rules.
//
// # Views
//
// View computes one node's View from the node, endpoint and client
// records; it is a pure function with a deterministic output order. A
// client is never paired with the endpoint of its own service on its own
// node (a pastiche does not send to itself), so under the default rules a
// pastiche client gets exactly the other pastiche endpoints of its horde.
// Other pairs on the same node are allowed. Every entry has a Key, Diff
// computes the change between two views, and View.Apply replays it.
package steward
