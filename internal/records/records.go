package records

import (
	"bytes"
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"time"
)

// Role is what a peer is in the cluster.
type Role string

// Roles.
const (
	RoleCoordinator Role = "coordinator"
	RoleNode        Role = "node"
	RoleAdmin       Role = "admin"
)

// State is how far a peer's activation got.
type State string

// States of a peer record.
const (
	StatePending State = "pending"
	StateActive  State = "active"
	StateFailed  State = "failed"
	// StateRemoved marks the tombstone of a removed peer: its VPN IP is
	// retired and its keys are refused from then on.
	StateRemoved State = "removed"
)

// Peer is the registry's record of one peer.
type Peer struct {
	Name           string     `json:"name,omitempty"`
	Role           Role       `json:"role"`
	VPNIP          netip.Addr `json:"vpnIP"`
	PublicEndpoint string     `json:"publicEndpoint,omitempty"`
	WGEndpoint     string     `json:"wgEndpoint,omitempty"`
	WGPubKey       []byte     `json:"wgPubKey,omitempty"`
	SigningPubKey  []byte     `json:"signingPubKey,omitempty"`
	// TLSPin is the SHA-256 of a coordinator's TLS certificate, which
	// nodes pin when they watch it.
	TLSPin    []byte `json:"tlsPin,omitempty"`
	Horde     string `json:"horde,omitempty"`
	State     State  `json:"state"`
	LastError string `json:"lastError,omitempty"`
	// Registered is set once the node's reeve completed the registration
	// handshake; ReevePubKey is then the key it proved and RegisteredAt
	// when. RegistrationError says why the last attempt failed.
	Registered        bool      `json:"registered,omitempty"`
	ReevePubKey       []byte    `json:"reevePubKey,omitempty"`
	RegisteredAt      time.Time `json:"registeredAt,omitzero"`
	RegistrationError string    `json:"registrationError,omitempty"`
	// Revision is the cluster revision of the record's last change.
	Revision uint64 `json:"revision"`
	// RevokedKeys, on the tombstone of a removed peer, are its reeve's and
	// its service clients' keys, refused from then on.
	RevokedKeys [][]byte `json:"revokedKeys,omitempty"`
}

// Cluster is the configuration fixed when the coordinator is activated.
type Cluster struct {
	ID               string       `json:"id"`
	VPNCIDR          netip.Prefix `json:"vpnCIDR"`
	CoordinatorVPNIP netip.Addr   `json:"coordinatorVPNIP"`
	// Rules is the connectivity rules file given at activation (YAML, see
	// coordinator/steward); empty means the default rules.
	Rules string `json:"rules,omitempty"`
}

// Activated is what an activated node reported about itself.
type Activated struct {
	Name          string
	Horde         string
	WGEndpoint    string
	WGPubKey      []byte
	SigningPubKey []byte
	// TLSPin is a coordinator's certificate pin (coordinators only).
	TLSPin []byte
}

// Services are the service endpoints and clients a node's reeve registered.
type Services struct {
	Endpoints []ServiceEndpoint `json:"endpoints,omitempty"`
	Clients   []ServiceClient   `json:"clients,omitempty"`
	// Revision is the cluster revision of the last change.
	Revision uint64 `json:"revision"`
}

// ServiceEndpoint is a service a node serves, on its VPN IP.
type ServiceEndpoint struct {
	Service string `json:"service"`
	Port    uint16 `json:"port"`
}

// ServiceClient is a service client on a node, with its signing key.
type ServiceClient struct {
	Service string `json:"service"`
	PubKey  []byte `json:"pubKey"`
}

// Equal compares the records, ignoring the revision.
func (s Services) Equal(o Services) bool {
	return slices.Equal(s.Endpoints, o.Endpoints) && slices.EqualFunc(s.Clients, o.Clients, func(a, b ServiceClient) bool {
		return a.Service == b.Service && bytes.Equal(a.PubKey, b.PubKey)
	})
}

// Sorted returns s with its records in a canonical order.
func (s Services) Sorted() Services {
	s.Endpoints = slices.Clone(s.Endpoints)
	s.Clients = slices.Clone(s.Clients)
	slices.SortFunc(s.Endpoints, func(a, b ServiceEndpoint) int { return cmp.Compare(a.Service, b.Service) })
	slices.SortFunc(s.Clients, func(a, b ServiceClient) int { return cmp.Compare(a.Service, b.Service) })
	return s
}

// SSHUser is one of the cluster's SSH users: a Linux user name and the
// authorized keys every peer installs for it (see internal/sshusers).
type SSHUser struct {
	Name string `json:"name"`
	// Keys are authorized_keys lines in canonical form, "TYPE BASE64" or
	// "TYPE BASE64 COMMENT", without options.
	Keys []string `json:"keys"`
	// Revision is the cluster revision of the record's last change.
	Revision uint64 `json:"revision"`
}

// Errors of the registry that its callers act on.
var (
	ErrNotInitialized = errors.New("registry is not initialized")
	ErrAlreadyActive  = errors.New("peer is already active")
	ErrUnknownPeer    = errors.New("unknown peer")
	ErrConflict       = errors.New("conflicts with another peer")
	ErrRemoved        = errors.New("peer was removed from the cluster")
	ErrCIDRFull       = errors.New("vpn cidr is full")
)
