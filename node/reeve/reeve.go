package reeve

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/httpsig"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/store"
	"github.com/fabricmesh/fabric/internal/view"
)

// VPN listens on and dials addresses inside the VPN.
type VPN interface {
	Listen(ctx context.Context, addr netip.AddrPort) (net.Listener, error)
	Dial(ctx context.Context, addr string) (net.Conn, error)
}

// Config is what New needs.
type Config struct {
	Store store.Store
	// Node is the peer's name, VPNIP its address and ClusterID its cluster.
	Node      string
	VPNIP     netip.Addr
	ClusterID string
	// CoordinatorName and CoordinatorSigningPubKey identify the registry's
	// callbacks (keyId registry@<coordinator>), trusted from activation
	// before any view arrives.
	CoordinatorName          string
	CoordinatorSigningPubKey ed25519.PublicKey
	// OtherCoordinators, if set, returns the signing keys of the other
	// coordinators the peer knows, by name: their registries' callbacks
	// are trusted too, so that the reeve registers through any coordinator
	// (the activating one may be gone).
	OtherCoordinators func() map[string]ed25519.PublicKey
	// StewardAddress is the steward endpoint, <coordinator VPN IP>:7446.
	StewardAddress string
	VPN            VPN
	// Register runs vpnapi Register with the reeve's public key.
	Register func(ctx context.Context, reevePubKey []byte) error
	// SocketPath is where the local API listens ("" for none).
	SocketPath string
	// Backoff bounds the retry delay of registration and service updates
	// (defaults 100ms, 5s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Reeve keeps a peer's service identities and its part of the cluster's
// service view. It is safe for concurrent use.
type Reeve struct {
	cfg    Config
	log    *slog.Logger
	replay *httpsig.ReplayCache
	wg     sync.WaitGroup

	mu         sync.RWMutex
	keys       map[string]ed25519.PrivateKey // local clients by service
	endpoints  map[string]uint16             // local endpoints by service
	registered bool
	view       *view.Held
	viewRev    uint64
	index      viewIndex
	dirty      chan struct{} // signals the service sync loop
}

// New loads the reeve's state from the store (creating its own key on first
// use). Start serves it.
func New(cfg Config) (*Reeve, error) {
	if cfg.Store == nil || cfg.Node == "" || !cfg.VPNIP.IsValid() || cfg.VPN == nil || cfg.Register == nil {
		return nil, errors.New("reeve: Store, Node, VPNIP, VPN and Register are required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reeve{
		cfg: cfg, log: cfg.Logger, replay: httpsig.NewReplayCache(ReplayCapacity),
		keys: map[string]ed25519.PrivateKey{}, endpoints: map[string]uint16{},
		view: view.NewHeld(cfg.Node), index: newViewIndex(), dirty: make(chan struct{}, 1),
	}
	if err := r.load(); err != nil {
		return nil, fmt.Errorf("loading reeve state: %w", err)
	}
	if err := r.ensureClient(serviceid.Reeve); err != nil {
		return nil, err
	}
	return r, nil
}

// ID returns the ID of this peer's instance of service.
func (r *Reeve) ID(service string) string { return serviceid.ID(service, r.cfg.Node) }

// Registered reports whether the registration handshake has completed.
func (r *Reeve) Registered() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.registered
}

// reserved services are fabric's own: services cannot register them.
var reserved = map[string]bool{serviceid.Reeve: true, serviceid.Steward: true, serviceid.Registry: true}

// RegisterEndpoint records that service is served on this peer's VPN IP at
// port and announces it to the steward. It returns the endpoint's ID and
// address. Registering the same endpoint again changes nothing.
func (r *Reeve) RegisterEndpoint(_ context.Context, service string, port uint16) (id, address string, err error) {
	if err := serviceid.CheckService(service); err != nil {
		return "", "", err
	}
	if reserved[service] {
		return "", "", fmt.Errorf("service %s is reserved for fabric itself", service)
	}
	if port == 0 {
		return "", "", fmt.Errorf("endpoint %s: port 0", service)
	}
	if err := r.saveEndpoint(service, port); err != nil {
		return "", "", err
	}
	return r.ID(service), netip.AddrPortFrom(r.cfg.VPNIP, port).String(), nil
}

// RegisterClient makes (or loads) the key pair of this peer's client of
// service and returns its ID, the keyId of its signed calls. Fabric's own
// services (reeve, steward, registry) cannot be registered: the steward
// refuses them, and one such client would make it refuse every later
// update of the peer's services.
func (r *Reeve) RegisterClient(_ context.Context, service string) (string, error) {
	if err := serviceid.CheckService(service); err != nil {
		return "", err
	}
	if reserved[service] {
		return "", fmt.Errorf("service %s is reserved for fabric itself", service)
	}
	if err := r.ensureClient(service); err != nil {
		return "", err
	}
	return r.ID(service), nil
}

// ensureClient makes the key pair of the local client of service unless it
// has one.
func (r *Reeve) ensureClient(service string) error {
	r.mu.RLock()
	_, ok := r.keys[service]
	r.mu.RUnlock()
	if ok {
		return nil
	}
	return r.newClientKey(service)
}

// localService returns the service of a local client ID.
func (r *Reeve) localService(clientID string) (string, error) {
	service, node, err := serviceid.Parse(clientID)
	if err != nil {
		return "", err
	}
	r.mu.RLock()
	_, ok := r.keys[service]
	r.mu.RUnlock()
	if node != r.cfg.Node || !ok {
		return "", fmt.Errorf("%s is not a client registered on this peer", clientID)
	}
	return service, nil
}

// Sign signs data with the key of the local client keyID. It implements
// signedrpc.Signer.
func (r *Reeve) Sign(_ context.Context, keyID string, data []byte) ([]byte, error) {
	service, err := r.localService(keyID)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	key := r.keys[service]
	r.mu.RUnlock()
	return ed25519.Sign(key, data), nil
}

// PubKey returns the public key of the local client of service.
func (r *Reeve) PubKey(service string) (ed25519.PublicKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	key, ok := r.keys[service]
	if !ok {
		return nil, false
	}
	return key.Public().(ed25519.PublicKey), true
}

// Endpoint is an endpoint a client may use.
type Endpoint struct {
	ID, Service, Address string
}

// Catalog lists the services the local client clientID may use.
func (r *Reeve) Catalog(_ context.Context, clientID string) ([]string, error) {
	if _, err := r.localService(clientID); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.index.catalog[clientID]), nil
}

// EndpointsUp lists the endpoints of service the local client clientID may
// use.
func (r *Reeve) EndpointsUp(_ context.Context, clientID, service string) ([]Endpoint, error) {
	if _, err := r.localService(clientID); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	byID := r.index.endpoints[clientID][service]
	out := make([]Endpoint, 0, len(byID))
	for _, e := range byID {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Lookup returns the public key of client if it may call the local endpoint
// endpointID, or an error wrapping httpsig.ErrUnknownKey (a key this peer
// does not know) or httpsig.ErrNotWhitelisted (known, but not allowed
// here).
func (r *Reeve) Lookup(endpointID, client string) (ed25519.PublicKey, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if key, ok := r.index.whitelist[endpointID][client]; ok {
		return key, nil
	}
	if endpointID == r.ID(serviceid.Reeve) {
		if key, ok := r.registryKey(client); ok {
			return key, nil
		}
	}
	if r.index.known[client] > 0 {
		return nil, fmt.Errorf("%w: %s may not call %s", httpsig.ErrNotWhitelisted, client, endpointID)
	}
	return nil, fmt.Errorf("%w: %s is not among the clients the rules let call %s", httpsig.ErrUnknownKey, client, endpointID)
}

// registryKey returns the signing key of the coordinator whose registry
// is client, if the reeve trusts its callbacks before any view: the
// activating coordinator, or one of cfg.OtherCoordinators.
func (r *Reeve) registryKey(client string) (ed25519.PublicKey, bool) {
	service, name, err := serviceid.Parse(client)
	if err != nil || service != serviceid.Registry {
		return nil, false
	}
	key := r.cfg.CoordinatorSigningPubKey
	if name != r.cfg.CoordinatorName {
		if r.cfg.OtherCoordinators == nil {
			return nil, false
		}
		key = r.cfg.OtherCoordinators()[name]
	}
	return key, len(key) == ed25519.PublicKeySize
}

// Whitelist returns the whitelist of the local endpoint endpointID, for
// signedrpc servers.
func (r *Reeve) Whitelist(endpointID string) Whitelist {
	return Whitelist{r: r, endpoint: endpointID}
}

// Whitelist is one endpoint's whitelist; it implements signedrpc.Whitelist.
type Whitelist struct {
	r interface {
		Lookup(endpointID, client string) (ed25519.PublicKey, error)
	}
	endpoint string
}

// Lookup implements signedrpc.Whitelist.
func (w Whitelist) Lookup(keyID string) (ed25519.PublicKey, error) {
	return w.r.Lookup(w.endpoint, keyID)
}

// View returns the applied service view and its revision.
func (r *Reeve) View() (view.View, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.view.View(), r.viewRev
}

// Replay is the replay cache shared by the peer's signed endpoints.
func (r *Reeve) Replay() *httpsig.ReplayCache { return r.replay }

// ReplayCapacity bounds the signatures a peer remembers to refuse replays
// (see httpsig.ReplayCache): far more than a peer's endpoints accept in the
// five-minute window.
const ReplayCapacity = 1 << 16
