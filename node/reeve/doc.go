// Package reeve is every peer's keeper of service identities (seed 000's
// reeve): it makes and checkpoints one ed25519 key pair per local service
// client, signs on their behalf, registers the peer with the coordinator
// (the registration handshake), announces the peer's endpoints and clients
// to the steward, and keeps the peer's part of the cluster's service view:
// the whitelist of its endpoints and the endpoints and catalog of its
// clients, as the steward computed them under the connectivity rules.
//
// Services use it in process (the Reeve's methods) or over a unix socket
// (DialLocal, mode 0600); both offer RegisterEndpoint, RegisterClient,
// Catalog, EndpointsUp, Sign and Lookup (the whitelist, for verification).
// Everything is checkpointed in the peer's store, so a restarted peer has
// its keys, registration and view back without asking anyone.
package reeve
