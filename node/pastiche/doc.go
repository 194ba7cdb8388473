// Package pastiche is fabric's demo service (seed 000's pastiche): a file
// transfer between the peers of a cluster, over signed gRPC calls inside the
// VPN.
//
// Every peer runs one pastiche: an endpoint pastiche@<node> on its VPN IP,
// port 7450, and a client of the same ID. Its Put method stores a file that
// another pastiche streams to it (atomically and durably, in <state
// dir>/pastiche/, or not at all); its Send method lets the coordinator's
// fabric-admin client ask it to stream a file to the pastiche of another
// node, which it does only if its reeve lists that endpoint among those its
// connectivity rules allow (by default: the same horde). Relay is the
// coordinator's side of `fabric pastiche send`.
//
// The peer's reeve is the only source of trust: it registers the endpoint
// and client with the steward, signs outgoing calls, and verifies incoming
// ones against the endpoint's whitelist. On top of that, pastiche restricts
// each method to one client service: Put to pastiche clients, Send to
// fabric-admin.
package pastiche
