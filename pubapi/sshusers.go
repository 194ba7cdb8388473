package pubapi

import (
	"context"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/authconn"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
)

// ListSSHUsers implements pubapi.
func (s *Server) ListSSHUsers(ctx context.Context, _ *pubapipb.ListSSHUsersRequest) (*pubapipb.ListSSHUsersResponse, error) {
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return nil, err
	}
	rev, users, err := s.core.SSHUsers()
	if err != nil {
		return nil, statusOf(err)
	}
	resp := &pubapipb.ListSSHUsersResponse{Revision: rev}
	for _, u := range users {
		resp.Users = append(resp.Users, SSHUserToProto(u))
	}
	return resp, nil
}

// AddSSHUser implements pubapi.
func (s *Server) AddSSHUser(ctx context.Context, req *pubapipb.AddSSHUserRequest) (*pubapipb.SSHUserChange, error) {
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return nil, err
	}
	ch, err := s.core.AddSSHUser(req.GetName(), req.GetKeys())
	if err != nil {
		return nil, statusOf(err)
	}
	return sshUserChangeToProto(ch), nil
}

// RemoveSSHUser implements pubapi.
func (s *Server) RemoveSSHUser(ctx context.Context, req *pubapipb.RemoveSSHUserRequest) (*pubapipb.SSHUserChange, error) {
	if _, err := authconn.RequireMethod(ctx, adminOnly...); err != nil {
		return nil, err
	}
	ch, err := s.core.RemoveSSHUser(req.GetName(), req.GetKeys())
	if err != nil {
		return nil, statusOf(err)
	}
	return sshUserChangeToProto(ch), nil
}

func sshUserChangeToProto(ch core.SSHUserChange) *pubapipb.SSHUserChange {
	out := &pubapipb.SSHUserChange{Changed: ch.Changed, Revision: ch.Revision}
	if ch.User != nil {
		out.User = SSHUserToProto(*ch.User)
	}
	for _, k := range ch.Keys {
		out.Keys = append(out.Keys, k.Line)
	}
	return out
}

// SSHUserToProto converts an SSH user record.
func SSHUserToProto(u records.SSHUser) *pubapipb.SSHUser {
	return &pubapipb.SSHUser{Name: u.Name, Keys: u.Keys, Revision: u.Revision}
}
