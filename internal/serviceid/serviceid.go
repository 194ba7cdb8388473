// Package serviceid names fabric's services: service names, the IDs of
// service clients and endpoints (<service>@<node>, which is also a client's
// http-signature keyId), the built-in services and their well-known ports
// on a peer's VPN IP, and the message a reeve signs to prove its key during
// registration.
package serviceid

import (
	"fmt"
	"strings"
)

// Built-in services.
const (
	Reeve       = "reeve"        // endpoint on every peer (registration callback); client of the steward
	Steward     = "steward"      // endpoint on the coordinator
	Registry    = "registry"     // client on the coordinator (registration callbacks)
	FabricAdmin = "fabric-admin" // client on the coordinator (relays admin requests)
	Pastiche    = "pastiche"     // the demo file transfer, on every peer
)

// Well-known ports on a peer's VPN IP.
const (
	ReevePort    = 7445
	StewardPort  = 7446
	PastichePort = 7450
)

// MaxPerPeer is the number of endpoints, and of clients, a peer may have:
// its reeve refuses more, and so does the steward.
const MaxPerPeer = 64

// Pattern is the syntax of a service name.
const Pattern = `[a-z][a-z0-9-]{0,31}`

// Valid reports whether s is a well-formed service name (matches
// Pattern; checked by hand, as every signed call and view entry parses an
// ID, and a regexp cost 4 % of a loaded coordinator's CPU).
func Valid(s string) bool {
	if len(s) < 1 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// CheckService explains why name is not a valid service name.
func CheckService(name string) error {
	if !Valid(name) {
		return fmt.Errorf("service name %q: use 1-32 lowercase letters, digits and '-', starting with a letter", name)
	}
	return nil
}

// Builtin returns the names of the built-in services, sorted.
func Builtin() []string { return []string{FabricAdmin, Pastiche, Reeve, Registry, Steward} }

// IsBuiltin reports whether s is a built-in service.
func IsBuiltin(s string) bool {
	switch s {
	case Reeve, Steward, Registry, FabricAdmin, Pastiche:
		return true
	}
	return false
}

// ID returns the identifier "<service>@<node>" of a client or endpoint.
func ID(service, node string) string { return service + "@" + node }

// Parse splits an ID made by ID into its service and node, checking the
// service name. The node name is everything after the first '@'.
func Parse(id string) (service, node string, err error) {
	service, node, ok := strings.Cut(id, "@")
	switch {
	case !ok:
		return "", "", fmt.Errorf("id %q: want <service>@<node>", id)
	case !Valid(service):
		return "", "", fmt.Errorf("id %q: invalid service name %q (want %s)", id, service, Pattern)
	case node == "":
		return "", "", fmt.Errorf("id %q: empty node name", id)
	}
	return service, node, nil
}

// ChallengeMessage is what a reeve signs to answer the registry's callback.
func ChallengeMessage(clusterID, node string, nonce []byte) []byte {
	return append([]byte("fabric registration v1\n"+clusterID+"\n"+node+"\n"), nonce...)
}
