package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/sshusers/sshuserstest"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/google/go-cmp/cmp"
)

// fakeUsers is a peer's user manager: it keeps the last set applied and
// can fail on demand.
type fakeUsers struct {
	mu      sync.Mutex
	applied []records.SSHUser
	calls   int
	fail    error
}

var _ UserApplier = (*fakeUsers)(nil)

func (f *fakeUsers) ApplyUsers(_ context.Context, users []records.SSHUser) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return f.fail
	}
	f.applied = slices.Clone(users)
	return nil
}

func (f *fakeUsers) failWith(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// names is the names of the users last applied.
func (f *fakeUsers) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, u := range f.applied {
		out = append(out, u.Name)
	}
	return out
}

// usersHarness is a harness whose peers each have a fakeUsers, by name.
func usersHarness(t *testing.T, nodes int) (*harness, map[string]*fakeUsers) {
	var mu sync.Mutex
	users := map[string]*fakeUsers{}
	h := newHarness(t, nodes, func(cfg *Config) {
		mu.Lock()
		defer mu.Unlock()
		if users[cfg.Self.Name] == nil {
			users[cfg.Self.Name] = &fakeUsers{}
		}
		cfg.Users = users[cfg.Self.Name]
	})
	return h, users
}

// waitUsers waits until every peer applied exactly names.
func waitUsers(t *testing.T, users map[string]*fakeUsers, names ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("every peer to apply the SSH users %v", names), func() error {
		for peer, u := range users {
			if got := u.names(); !slices.Equal(got, names) {
				return fmt.Errorf("%s applied %v", peer, got)
			}
		}
		return nil
	})
}

var (
	aliceKey = sshuserstest.Key(1, "alice@laptop")
	bobKey   = sshuserstest.Key(2, "bob@work")
)

func TestSSHUsersDistributed(t *testing.T) {
	h, users := usersHarness(t, 3)
	req := activationRequest(t, h.nodeEndpoints(h.nodes...))
	req.Users, req.UsersName = "users:\n- {name: alice, keys: ['"+aliceKey+"']}\n", "users.yaml"
	if _, err := h.coord.core.ActivateAsCoordinator(t.Context(), req, func(Event) {}); err != nil {
		t.Fatal(err)
	}
	waitUsers(t, users, "alice")
	rev, got, err := h.coord.core.SSHUsers()
	if err != nil {
		t.Fatal(err)
	}
	want := []records.SSHUser{{Name: "alice", Keys: []string{aliceKey}, Revision: 1}}
	if rev != 1 || !cmp.Equal(want, got) {
		t.Errorf("SSHUsers = %d, %v; want 1, %v", rev, got, want)
	}

	ch, err := h.coord.core.AddSSHUser("bob", []string{bobKey})
	if err != nil || !ch.Changed || ch.User == nil || ch.User.Name != "bob" || len(ch.Keys) != 1 {
		t.Fatalf("AddSSHUser(bob) = %+v, %v", ch, err)
	}
	if ch.Revision != h.registry().Revision() {
		t.Errorf("the change's revision %d is not the registry's %d", ch.Revision, h.registry().Revision())
	}
	waitUsers(t, users, "alice", "bob")
	h.waitSettled()

	// The same key again changes nothing: no revision.
	rev = h.registry().Revision()
	if ch, err := h.coord.core.AddSSHUser("bob", []string{sshuserstest.Key(2, "renamed")}); err != nil || ch.Changed {
		t.Errorf("adding bob's key again = %+v, %v; want unchanged", ch, err)
	}
	if h.registry().Revision() != rev {
		t.Error("an unchanged add moved the revision")
	}

	ch, err = h.coord.core.RemoveSSHUser("alice", nil)
	if err != nil || !ch.Changed || ch.User != nil {
		t.Fatalf("RemoveSSHUser(alice) = %+v, %v", ch, err)
	}
	waitUsers(t, users, "bob")
	if _, err := h.coord.core.RemoveSSHUser("bob", nil); err != nil {
		t.Fatal(err)
	}
	waitUsers(t, users) // the empty set: every peer locks them all
}

// TestSSHUsersNotAppliedNotPersisted: a node whose user manager fails does
// not persist the revision, retries, and catches up once it works.
func TestSSHUsersNotAppliedNotPersisted(t *testing.T) {
	h, users := usersHarness(t, 2)
	h.mustActivate()
	broken := users[h.nodes[0].self.Name]
	broken.failWith(errors.New("useradd: cannot lock /etc/passwd"))
	if _, err := h.coord.core.AddSSHUser("alice", []string{aliceKey}); err != nil {
		t.Fatal(err)
	}
	rev := h.registry().Revision()
	eventually(t, "the working node to apply the users", func() error {
		if got, _ := h.nodes[1].core.AppliedRevision(); got != rev {
			return fmt.Errorf("at %d", got)
		}
		return nil
	})
	eventually(t, "the broken node to retry", func() error {
		broken.mu.Lock()
		defer broken.mu.Unlock()
		if broken.calls < 3 {
			return fmt.Errorf("%d calls", broken.calls)
		}
		return nil
	})
	if got, _ := h.nodes[0].core.AppliedRevision(); got >= rev {
		t.Errorf("the broken node persisted revision %d without applying the users of %d", got, rev)
	}
	broken.failWith(nil)
	waitUsers(t, users, "alice")
	h.waitSettled()
}

func TestSSHUserRefusals(t *testing.T) {
	h, _ := usersHarness(t, 1)
	if _, err := h.coord.core.AddSSHUser("alice", []string{aliceKey}); !errors.Is(err, ErrWrongState) {
		t.Errorf("AddSSHUser before activation = %v, want ErrWrongState", err)
	}
	h.mustActivate()
	if _, err := h.nodes[0].core.AddSSHUser("alice", []string{aliceKey}); !errors.Is(err, ErrWrongState) {
		t.Errorf("AddSSHUser on a node = %v, want ErrWrongState", err)
	}
	if _, _, err := h.nodes[0].core.SSHUsers(); !errors.Is(err, ErrWrongState) {
		t.Errorf("SSHUsers on a node = %v, want ErrWrongState", err)
	}
	rev := h.registry().Revision()
	tests := []struct {
		name string
		do   func() error
		is   error
		want string
	}{
		{"malformed key", func() error { _, err := h.coord.core.AddSSHUser("alice", []string{"ssh-ed25519 AAAA"}); return err },
			ErrInvalidArgument, "user alice: key 1: not a public key"},
		{"reserved name", func() error { _, err := h.coord.core.AddSSHUser("root", []string{aliceKey}); return err },
			ErrInvalidArgument, `user name "root" is reserved`},
		{"unknown user", func() error { _, err := h.coord.core.RemoveSSHUser("carol", nil); return err },
			ErrNotFound, `there is no SSH user "carol"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("= %v, want %v saying %q", err, tt.is, tt.want)
			}
		})
	}
	if h.registry().Revision() != rev {
		t.Error("a refused change moved the revision")
	}
}

// TestSSHUsersLockedOnRemoval: a node removed from the cluster locks the
// users it manages (it applies the empty set) as it leaves; the others keep
// them.
func TestSSHUsersLockedOnRemoval(t *testing.T) {
	h, users := usersHarness(t, 2)
	h.mustActivate()
	if _, err := h.coord.core.AddSSHUser("alice", []string{aliceKey}); err != nil {
		t.Fatal(err)
	}
	waitUsers(t, users, "alice")
	gone := h.nodes[0]
	// The node leaves when the coordinator tells it or when its watch
	// says so, whichever comes first.
	if _, err := h.coord.core.RemoveNode(t.Context(), gone.self.Name); err != nil {
		t.Fatalf("RemoveNode: %v", err)
	}
	eventually(t, "the removed node to lock its users", func() error {
		if got := users[gone.self.Name].names(); len(got) != 0 {
			return fmt.Errorf("it holds %v", got)
		}
		return nil
	})
	if got := users[h.nodes[1].self.Name].names(); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("a node still in the cluster holds %v", got)
	}
}

// TestSSHUserStoreFailure: a change the store cannot commit (a full disk)
// is an error of the coordinator, not an invalid request, and it goes
// through once the store writes again.
func TestSSHUserStoreFailure(t *testing.T) {
	h := &harness{t: t, net: newFakeNet(), activator: newFakeActivator()}
	st := &failingStore{Store: store.NewMem()}
	h.coord = h.start(newSelf(t, "coord", 1), st)
	h.activator.signingKey = signingPrivKey(h.coord.self.SigningPubKey)
	h.mustActivate()
	rev := h.registry().Revision()
	st.failUpdates(errors.New("write fabric.db: no space left on device"))
	_, err := h.coord.core.AddSSHUser("alice", []string{aliceKey})
	if err == nil || errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("AddSSHUser on a failing store = %v, want the store's error, not ErrInvalidArgument", err)
	}
	if h.registry().Revision() != rev {
		t.Error("a change the store refused moved the revision")
	}
	st.failUpdates(nil)
	if _, err := h.coord.core.AddSSHUser("alice", []string{aliceKey}); err != nil {
		t.Errorf("AddSSHUser once the store writes again: %v", err)
	}
}
