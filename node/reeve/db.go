package reeve

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/fabricmesh/fabric/core"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/view"
)

// The reeve checkpoints everything in the peer's store (a bbolt file, mode
// 0600), each change in one transaction:
//
//	reeve/clients/<service>    the client's ed25519 seed
//	reeve/endpoints/<service>  the endpoint's port
//	reeve/registered           the cluster and key of the completed registration
//	reeve/view                 the applied service view and its revision
const (
	prefixClients   = "reeve/clients/"
	prefixEndpoints = "reeve/endpoints/"
	keyRegistered   = "reeve/registered"
	keyView         = "reeve/view"
)

type storedClient struct {
	Seed []byte `json:"seed"`
}

type storedEndpoint struct {
	Port uint16 `json:"port"`
}

type storedRegistration struct {
	ClusterID string `json:"clusterID"`
	PubKey    []byte `json:"pubKey"`
}

type storedView struct {
	Revision uint64    `json:"revision"`
	View     view.View `json:"view"`
}

// load reads the checkpoint.
func (r *Reeve) load() error {
	return r.cfg.Store.View(func(tx store.Tx) error {
		err := tx.Scan(prefixClients, func(key string, value []byte) error {
			var c storedClient
			if err := store.DecodeJSON(key, value, &c); err != nil {
				return err
			}
			if len(c.Seed) != ed25519.SeedSize {
				return fmt.Errorf("%s: key seed has %d bytes", key, len(c.Seed))
			}
			service := strings.TrimPrefix(key, prefixClients)
			if err := serviceid.CheckService(service); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			r.keys[service] = ed25519.NewKeyFromSeed(c.Seed)
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Scan(prefixEndpoints, func(key string, value []byte) error {
			var e storedEndpoint
			if err := store.DecodeJSON(key, value, &e); err != nil {
				return err
			}
			service := strings.TrimPrefix(key, prefixEndpoints)
			if err := serviceid.CheckService(service); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if e.Port == 0 || reserved[service] {
				return fmt.Errorf("%s: not an endpoint a service can register", key)
			}
			r.endpoints[service] = e.Port
			return nil
		})
		if err != nil {
			return err
		}
		var reg storedRegistration
		switch err := store.GetJSON(tx, keyRegistered, &reg); {
		case err == nil:
			// A registration proved another key than the reeve's (lost
			// or replaced): the steward would refuse every call, so
			// register again.
			key, ok := r.keys[serviceid.Reeve]
			r.registered = reg.ClusterID == r.cfg.ClusterID && ok && bytes.Equal(reg.PubKey, key.Public().(ed25519.PublicKey))
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		var v storedView
		switch err := store.GetJSON(tx, keyView, &v); {
		case err == nil:
			r.setView(v.Revision, v.View)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return nil
	})
}

func (r *Reeve) newClientKey(service string) error {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	key := ed25519.NewKeyFromSeed(seed)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.keys[service]; ok {
		return nil // made concurrently
	}
	err := r.cfg.Store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, prefixClients+service, storedClient{Seed: seed})
	})
	if err != nil {
		return fmt.Errorf("saving the key of client %s: %w", service, err)
	}
	r.keys[service] = key
	r.log.Info("client registered", "client", r.ID(service))
	r.markDirty()
	return nil
}

func (r *Reeve) saveEndpoint(service string, port uint16) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.endpoints[service] == port {
		return nil
	}
	err := r.cfg.Store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, prefixEndpoints+service, storedEndpoint{Port: port})
	})
	if err != nil {
		return fmt.Errorf("saving endpoint %s: %w", service, err)
	}
	r.endpoints[service] = port
	r.log.Info("endpoint registered", "endpoint", r.ID(service), "port", port)
	r.markDirty()
	return nil
}

func (r *Reeve) saveRegistered() error {
	pub, _ := r.PubKey("reeve")
	err := r.cfg.Store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, keyRegistered, storedRegistration{ClusterID: r.cfg.ClusterID, PubKey: pub})
	})
	if err != nil {
		return fmt.Errorf("saving registration: %w", err)
	}
	r.mu.Lock()
	r.registered = true
	r.mu.Unlock()
	return nil
}

// forgetRegistration drops the checkpointed registration, so that run
// registers again.
func (r *Reeve) forgetRegistration() error {
	err := r.cfg.Store.Update(func(tx store.Tx) error { return tx.Delete(keyRegistered) })
	if err != nil {
		return fmt.Errorf("forgetting the registration: %w", err)
	}
	r.mu.Lock()
	r.registered = false
	r.mu.Unlock()
	return nil
}

// markDirty asks the sync loop to send the services again. r.mu held or not.
func (r *Reeve) markDirty() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// ApplyView applies a change of the peer's service view at rev and
// checkpoints it. It implements core.ViewApplier.
func (r *Reeve) ApplyView(_ context.Context, rev uint64, u core.ViewUpdate) error {
	r.mu.RLock()
	next := u.Upserts
	if !u.Full {
		next = r.view.Apply(u.Upserts, u.Removed)
	}
	r.mu.RUnlock()
	err := r.cfg.Store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, keyView, storedView{Revision: rev, View: next})
	})
	if err != nil {
		return fmt.Errorf("saving the service view: %w", err)
	}
	r.mu.Lock()
	r.setView(rev, next)
	r.mu.Unlock()
	return nil
}

// viewIndex is the view arranged for lookups.
type viewIndex struct {
	whitelist map[string]map[string]ed25519.PublicKey // endpoint -> client -> key
	known     map[string]bool                         // every client in the whitelist
	endpoints map[string]map[string][]Endpoint        // client -> service -> endpoints
	catalog   map[string][]string                     // client -> services
}

// setView replaces the view and its index. r.mu must be held (or r not yet
// shared).
func (r *Reeve) setView(rev uint64, v view.View) {
	idx := viewIndex{
		whitelist: map[string]map[string]ed25519.PublicKey{}, known: map[string]bool{},
		endpoints: map[string]map[string][]Endpoint{}, catalog: map[string][]string{},
	}
	for _, w := range v.Whitelist {
		if idx.whitelist[w.Endpoint] == nil {
			idx.whitelist[w.Endpoint] = map[string]ed25519.PublicKey{}
		}
		idx.whitelist[w.Endpoint][w.Client] = ed25519.PublicKey(w.PubKey)
		idx.known[w.Client] = true
	}
	for _, e := range v.Endpoints {
		if idx.endpoints[e.Client] == nil {
			idx.endpoints[e.Client] = map[string][]Endpoint{}
		}
		idx.endpoints[e.Client][e.Service] = append(idx.endpoints[e.Client][e.Service], Endpoint{ID: e.Endpoint, Service: e.Service, Address: e.Address})
	}
	for _, c := range v.Catalog {
		idx.catalog[c.Client] = append(idx.catalog[c.Client], c.Service)
	}
	r.view, r.viewRev, r.index = v, rev, idx
}
