package reeve

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/internal/view"
)

// The reeve checkpoints everything in the peer's store (a bbolt file, mode
// 0600), each change in one transaction:
//
//	reeve/clients/<service>     the client's ed25519 seed
//	reeve/endpoints/<service>   the endpoint's port
//	reeve/registered            the cluster and key of the completed registration
//	reeve/view/revision         the revision of the applied service view
//	reeve/view/local            its entries between the node's own services, and its catalog
//	reeve/view/slices/<node>    its entries shared with another node
//
// A view change writes only the slices it replaces.
const (
	prefixClients   = "reeve/clients/"
	prefixEndpoints = "reeve/endpoints/"
	keyRegistered   = "reeve/registered"
	keyViewRevision = "reeve/view/revision"
	keyViewLocal    = "reeve/view/local"
	prefixSlices    = "reeve/view/slices/"
	// keyViewV1 held the whole view in one value; a reeve restarted from
	// such a store moves it.
	keyViewV1 = "reeve/view"
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
		return r.loadView(tx)
	})
}

// loadView reads the checkpointed view (either layout).
func (r *Reeve) loadView(tx store.Tx) error {
	var v1 storedView
	switch err := store.GetJSON(tx, keyViewV1, &v1); {
	case err == nil:
		r.setFull(v1.Revision, v1.View)
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	var rev uint64
	switch err := store.GetJSON(tx, keyViewRevision, &rev); {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	var local view.View
	if err := store.GetJSON(tx, keyViewLocal, &local); err != nil {
		return err
	}
	r.setFull(rev, local)
	return tx.Scan(prefixSlices, func(key string, value []byte) error {
		var sl view.Slice
		if err := store.DecodeJSON(key, value, &sl); err != nil {
			return err
		}
		if sl.Node != strings.TrimPrefix(key, prefixSlices) || sl.Node == r.cfg.Node {
			return fmt.Errorf("%s: holds the slice of node %q", key, sl.Node)
		}
		r.replaceSlice(sl)
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
	if len(r.keys) >= serviceid.MaxPerPeer {
		return fmt.Errorf("client %s: this peer has %d clients, the most a peer may have", service, len(r.keys))
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
	// The reeve's own endpoint counts too.
	if _, ok := r.endpoints[service]; !ok && len(r.endpoints)+1 >= serviceid.MaxPerPeer {
		return fmt.Errorf("endpoint %s: this peer has %d endpoints, the most a peer may have", service, len(r.endpoints)+1)
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
// checkpoints what it changed in one transaction. It implements
// core.ViewApplier.
func (r *Reeve) ApplyView(_ context.Context, rev uint64, u update.ViewUpdate) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.cfg.Store.Update(func(tx store.Tx) error {
		if u.Kind == update.ViewFull {
			if err := deleteSlices(tx); err != nil {
				return err
			}
			if err := tx.Delete(keyViewV1); err != nil {
				return err
			}
			next := view.NewHeld(r.cfg.Node)
			next.SetFull(u.Full)
			if err := store.PutJSON(tx, keyViewLocal, next.Local()); err != nil {
				return err
			}
			for _, node := range next.Nodes() {
				if err := store.PutJSON(tx, prefixSlices+node, next.Slice(node)); err != nil {
					return err
				}
			}
		}
		for _, sl := range u.Slices {
			if sl.Node == r.cfg.Node {
				return fmt.Errorf("a slice of the view names this node %s", sl.Node)
			}
			var err error
			if sl.Empty() {
				err = tx.Delete(prefixSlices + sl.Node)
			} else {
				err = store.PutJSON(tx, prefixSlices+sl.Node, sl)
			}
			if err != nil {
				return err
			}
		}
		return store.PutJSON(tx, keyViewRevision, rev)
	})
	if err != nil {
		return fmt.Errorf("saving the service view: %w", err)
	}
	if u.Kind == update.ViewFull {
		r.setFull(rev, u.Full)
	}
	for _, sl := range u.Slices {
		r.replaceSlice(sl)
	}
	r.viewRev = rev
	return nil
}

func deleteSlices(tx store.Tx) error {
	var keys []string
	if err := tx.Scan(prefixSlices, func(key string, _ []byte) error {
		keys = append(keys, key)
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// viewIndex is the view arranged for lookups, kept slice by slice.
type viewIndex struct {
	whitelist map[string]map[string]ed25519.PublicKey   // endpoint -> client -> key
	known     map[string]int                            // clients in the whitelist, with their entries
	endpoints map[string]map[string]map[string]Endpoint // client -> service -> endpoint ID
	catalog   map[string][]string                       // client -> services
}

func newViewIndex() viewIndex {
	return viewIndex{
		whitelist: map[string]map[string]ed25519.PublicKey{}, known: map[string]int{},
		endpoints: map[string]map[string]map[string]Endpoint{}, catalog: map[string][]string{},
	}
}

// add indexes entries (remove: drops them).
func (x viewIndex) add(wl []view.WhitelistEntry, eps []view.EndpointEntry, remove bool) {
	for _, w := range wl {
		if remove {
			delete(x.whitelist[w.Endpoint], w.Client)
			if x.known[w.Client]--; x.known[w.Client] <= 0 {
				delete(x.known, w.Client)
			}
			continue
		}
		if x.whitelist[w.Endpoint] == nil {
			x.whitelist[w.Endpoint] = map[string]ed25519.PublicKey{}
		}
		x.whitelist[w.Endpoint][w.Client] = ed25519.PublicKey(w.PubKey)
		x.known[w.Client]++
	}
	for _, e := range eps {
		if remove {
			delete(x.endpoints[e.Client][e.Service], e.Endpoint)
			continue
		}
		if x.endpoints[e.Client] == nil {
			x.endpoints[e.Client] = map[string]map[string]Endpoint{}
		}
		if x.endpoints[e.Client][e.Service] == nil {
			x.endpoints[e.Client][e.Service] = map[string]Endpoint{}
		}
		x.endpoints[e.Client][e.Service][e.Endpoint] = Endpoint{ID: e.Endpoint, Service: e.Service, Address: e.Address}
	}
}

// setFull replaces the view and its index. r.mu must be held (or r not yet
// shared).
func (r *Reeve) setFull(rev uint64, v view.View) {
	r.view = view.NewHeld(r.cfg.Node)
	r.view.SetFull(v)
	r.index = newViewIndex()
	r.index.add(v.Whitelist, v.Endpoints, false)
	for _, c := range v.Catalog {
		r.index.catalog[c.Client] = append(r.index.catalog[c.Client], c.Service)
	}
	r.viewRev = rev
}

// replaceSlice replaces one slice of the view and its entries in the
// index. r.mu must be held (or r not yet shared).
func (r *Reeve) replaceSlice(sl view.Slice) {
	old := r.view.Replace(sl)
	r.index.add(old.Whitelist, old.Endpoints, true)
	r.index.add(sl.Whitelist, sl.Endpoints, false)
}
