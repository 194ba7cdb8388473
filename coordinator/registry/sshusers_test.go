package registry_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/coordinator/registry"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/google/go-cmp/cmp"
)

// testUsers are the SSH users tests give Init: alice and bob.
func testUsers() []records.SSHUser {
	return []records.SSHUser{
		{Name: "alice", Keys: []string{sshuserstest.Key(1, "alice@laptop")}},
		{Name: "bob", Keys: []string{sshuserstest.Key(2, "bob@work")}},
	}
}

func stamped(users []records.SSHUser, rev uint64) []records.SSHUser {
	out := make([]records.SSHUser, len(users))
	for i, u := range users {
		u.Revision = rev
		out[i] = u
	}
	return out
}

func TestSSHUsers(t *testing.T) {
	for _, sk := range storeKinds() {
		t.Run(sk.name, func(t *testing.T) {
			r, err := registry.Open(sk.open(t))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := r.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) { return cur, nil }); !errors.Is(err, registry.ErrNotInitialized) {
				t.Errorf("UpdateSSHUsers before Init = %v, want ErrNotInitialized", err)
			}
			if _, err := r.Init(records.Cluster{ID: "c1", VPNCIDR: mustParseCIDR(t, "203.0.113.0/24")}, coordinatorPeer(),
				[]records.Peer{admin(0)}, testUsers(), nil); err != nil {
				t.Fatal(err)
			}
			initRev := r.Revision()
			rev, users := r.SSHUsers()
			if rev != initRev {
				t.Errorf("users' revision after Init = %d, want the Init revision %d", rev, initRev)
			}
			if diff := cmp.Diff(stamped(testUsers(), initRev), users); diff != "" {
				t.Errorf("users after Init (-want +got):\n%s", diff)
			}

			// Adding carol: one revision; alice and bob keep theirs.
			carol := records.SSHUser{Name: "carol", Keys: []string{sshuserstest.Key(3, "")}}
			changed, rev, users, err := r.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) {
				return append(cur, carol), nil
			})
			if err != nil || !changed || rev != initRev+1 || r.Revision() != initRev+1 {
				t.Fatalf("adding carol = %v, %d, %v; registry revision %d; want changed at %d", changed, rev, err, r.Revision(), initRev+1)
			}
			want := append(stamped(testUsers(), initRev), records.SSHUser{Name: "carol", Keys: carol.Keys, Revision: initRev + 1})
			if diff := cmp.Diff(want, users); diff != "" {
				t.Errorf("users after adding carol (-want +got):\n%s", diff)
			}

			// The same set again writes nothing and wakes nobody.
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			woken := make(chan uint64, 1)
			go func() { rev, _ := r.Wait(ctx, initRev+1); woken <- rev }()
			changed, rev, _, err = r.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) { return cur, nil })
			if err != nil || changed || rev != initRev+1 {
				t.Errorf("same users again = %v, %d, %v; want unchanged at %d", changed, rev, err, initRev+1)
			}
			if got := <-woken; got != initRev+1 {
				t.Errorf("an unchanged update moved the revision to %d", got)
			}

			// An error from fn changes nothing.
			before := stateOf(r)
			errBad := errors.New("bad")
			if _, _, _, err := r.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) { return nil, errBad }); !errors.Is(err, errBad) {
				t.Errorf("UpdateSSHUsers with a failing fn = %v, want its error", err)
			}
			if diff := cmp.Diff(before, stateOf(r), cmpNetip); diff != "" {
				t.Errorf("a failed update changed the registry (-before +after):\n%s", diff)
			}

			// Removing alice: her record is gone, the users' revision moves.
			changed, rev, users, err = r.UpdateSSHUsers(func(cur []records.SSHUser) ([]records.SSHUser, error) { return cur[1:], nil })
			if err != nil || !changed || rev != initRev+2 {
				t.Fatalf("removing alice = %v, %d, %v", changed, rev, err)
			}
			if diff := cmp.Diff(want[1:], users); diff != "" {
				t.Errorf("users after removing alice (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSSHUsersRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openBolt(t, path)
	r := initRegistry(t, st, "203.0.113.0/24", 1)
	if _, _, _, err := r.UpdateSSHUsers(func([]records.SSHUser) ([]records.SSHUser, error) { return testUsers(), nil }); err != nil {
		t.Fatal(err)
	}
	beforeRev, before := r.SSHUsers()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := registry.Open(openBolt(t, path))
	if err != nil {
		t.Fatal(err)
	}
	rev, users := r.SSHUsers()
	if rev != beforeRev {
		t.Errorf("users' revision after restart = %d, want %d", rev, beforeRev)
	}
	if diff := cmp.Diff(before, users); diff != "" {
		t.Errorf("users after restart (-before +after):\n%s", diff)
	}
}
