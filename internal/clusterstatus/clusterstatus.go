// Package clusterstatus holds the JSON form of the cluster's status and
// events, as `fabric status -o json` and `fabric events -o json` print
// them and as the test bed reads them.
package clusterstatus

// Status is the JSON of `fabric status -o json`.
type Status struct {
	ClusterID string `json:"clusterID"`
	Revision  uint64 `json:"revision"`
	VPNCIDR   string `json:"vpnCIDR"`
	Peers     []Peer `json:"peers"`
	Admins    []Peer `json:"admins"`
	// Rules are the connectivity rules in force, "client -> service (scope)".
	Rules []string `json:"rules"`
	// CoordinatorVersion is the coordinator's fabricd build, as fabricd
	// --version prints it after the name.
	CoordinatorVersion string `json:"coordinatorVersion"`
}

// Service is an endpoint (with its address) or a client of a peer.
type Service struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	Address string `json:"address,omitempty"`
}

// Peer is one peer in Status.
type Peer struct {
	Name            string `json:"name"`
	Role            string `json:"role"`
	State           string `json:"state"`
	VPNIP           string `json:"vpnIP"`
	PublicEndpoint  string `json:"publicEndpoint"`
	WGEndpoint      string `json:"wgEndpoint"`
	WGPubKey        string `json:"wgPubKey"`
	Horde           string `json:"horde"`
	AppliedRevision uint64 `json:"appliedRevision"`
	// Online: the peer's watch is open and it reported in the last 25 s
	// (the coordinator always is). An admin has one while `fabric vpn up`
	// runs.
	Online bool `json:"online"`
	// LastSeen is when the peer last reported on its watch (RFC 3339), if
	// ever.
	LastSeen string `json:"lastSeen,omitempty"`
	// CoordinatorHandshakeAgeMs is how long ago the peer's last WireGuard
	// handshake with the coordinator was, as it reported it (-1: unknown).
	CoordinatorHandshakeAgeMs int64 `json:"coordinatorHandshakeAgeMs"`
	// Watching names the coordinator whose watch the peer has open, as
	// the coordinator that answered knows it: its own watches at once,
	// the other coordinators' from their last beat (every 5 s). Empty:
	// none known.
	Watching  string `json:"watching,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// Registered: the peer's reeve completed the registration handshake;
	// RegistrationError says why the last attempt failed. The peer's view
	// of the services is the one of its AppliedRevision.
	Registered bool `json:"registered"`
	// RegisteredAt is the time of the registration (RFC 3339, milliseconds).
	RegisteredAt      string    `json:"registeredAt,omitempty"`
	RegistrationError string    `json:"registrationError,omitempty"`
	Endpoints         []Service `json:"endpoints"`
	Clients           []Service `json:"clients"`
}

// Event is one event of the cluster (fabric events -o json): a change of
// the log, or (kind "applied", not in the log) a peer's report of the
// revision it applied.
type Event struct {
	Revision uint64 `json:"revision"`
	// At is RFC 3339 with milliseconds.
	At     string `json:"at"`
	Kind   string `json:"kind"`
	Node   string `json:"node,omitempty"`
	VPNIP  string `json:"vpnIP,omitempty"`
	Detail string `json:"detail,omitempty"`
}
