package steward

import (
	"fmt"
	"regexp"
	"strings"
)

// Built-in services.
const (
	ServiceReeve       = "reeve"
	ServiceSteward     = "steward"
	ServiceRegistry    = "registry"
	ServiceFabricAdmin = "fabric-admin"
	ServicePastiche    = "pastiche"
)

// ServiceNamePattern is the syntax of a service name.
const ServiceNamePattern = `[a-z][a-z0-9-]{0,31}`

var serviceNameRE = regexp.MustCompile(`^` + ServiceNamePattern + `$`)

// ValidServiceName reports whether s is a well-formed service name.
func ValidServiceName(s string) bool { return serviceNameRE.MatchString(s) }

// BuiltinServices returns the names of the built-in services, sorted.
func BuiltinServices() []string {
	return []string{ServiceFabricAdmin, ServicePastiche, ServiceReeve, ServiceRegistry, ServiceSteward}
}

func isBuiltinService(s string) bool {
	switch s {
	case ServiceReeve, ServiceSteward, ServiceRegistry, ServiceFabricAdmin, ServicePastiche:
		return true
	}
	return false
}

// ID returns the identifier "<service>@<node>" of a client or endpoint. A
// client's ID is also its http-signature keyId.
func ID(service, node string) string { return service + "@" + node }

// SplitID splits an ID made by ID into its service and node, checking the
// service name. The node name is everything after the first '@'.
func SplitID(id string) (service, node string, err error) {
	service, node, ok := strings.Cut(id, "@")
	switch {
	case !ok:
		return "", "", fmt.Errorf("id %q: want <service>@<node>", id)
	case !ValidServiceName(service):
		return "", "", fmt.Errorf("id %q: invalid service name %q (want %s)", id, service, ServiceNamePattern)
	case node == "":
		return "", "", fmt.Errorf("id %q: empty node name", id)
	}
	return service, node, nil
}
