// Package feed is the coordinator's incremental view engine: it answers
// each node, from the registry's change log, with what the node must
// apply to go from the revision it applied to the current one.
//
// An answer has two parts. The peers part lists the WireGuard peers whose
// record changed (every node receives every active peer; the coordinator
// also its pending nodes) and the ones that left. The view part is the
// change of the node's service view (internal/view): the whitelist of its
// endpoints, the endpoints and the catalog of its clients.
//
// Views are evaluated edge by edge, not node by node. A rule (client
// service, endpoint service, scope) pairs records of two nodes, so a change
// of node M's records can only change, in another node N's view, the
// entries N shares with M: M's slice of N's view. For each change the feed
// asks which nodes share a rule with M before or after the change (an
// index from service and horde to the nodes holding it), and sends each of
// them M's new slice. The work for one change is proportional to the nodes
// it affects; nothing is kept per node: memory holds the records, their
// index and the tail of the change log. A node whose own records changed
// gets its whole view, and so does a node whose revision is unknown, ahead
// of the coordinator's or older than the log (a full snapshot).
//
// The from-scratch computation (coordinator/steward.View) is the reference:
// tests compare the view a node builds from the feed's answers with it
// after every change.
//
// A change wakes only the watchers it concerns: every node at once when
// the WireGuard peers they receive change (a join, a removal, an endpoint)
// or the SSH users; for the change of a view member (a registration,
// services), the node itself and those whose view shares a rule with it,
// found through the index. A change that concerns nobody (a liveness
// record) wakes no one; Current tells the liveness that such a node is
// current all the same. The part of an answer every watcher at the same
// revision shares (the log between two revisions, the peers of a full
// snapshot) is computed once per round, not once per watcher.
//
// Changes close together are coalesced without a fixed delay: a watcher
// that is still sending its last answer when more changes land gets them
// all in its next answer.
package feed
