// Package clusterstatus holds the JSON form of the cluster's status, as
// `fabric status -o json` prints it and as the test bed reads it.
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
	// LastSeen is the time of the peer's last watch call (RFC 3339), if any.
	LastSeen  string `json:"lastSeen,omitempty"`
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
