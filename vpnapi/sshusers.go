package vpnapi

import (
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
)

// SSHUsersToProto converts the cluster's SSH users to the wire.
func SSHUsersToProto(users []records.SSHUser) *vpnapipb.SSHUsers {
	out := &vpnapipb.SSHUsers{}
	for _, u := range users {
		out.Users = append(out.Users, &vpnapipb.SSHUser{Name: u.Name, Keys: u.Keys, Revision: u.Revision})
	}
	return out
}

// SSHUsersFromProto converts back. The user manager checks the users
// before applying them.
func SSHUsersFromProto(p *vpnapipb.SSHUsers) []records.SSHUser {
	var out []records.SSHUser
	for _, u := range p.GetUsers() {
		out = append(out, records.SSHUser{Name: u.GetName(), Keys: u.GetKeys(), Revision: u.GetRevision()})
	}
	return out
}
