package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fabricmesh/fabric/internal/crashpoint"
	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/signedrpc"
	"github.com/fabricmesh/fabric/node/reeve/reevepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Registrar runs the registration handshake (two factors, two channels): a
// node's reeve offers its key on the vpnapi connection, authenticated with
// the node's key (first factor, first channel); the registrar then calls the
// reeve back on the node's reeve endpoint (second channel) with a fresh
// nonce, signing the call as the registry, and the reeve must sign the nonce
// with the key it offered (second factor). Only then is the node registered
// and its reeve key trusted.
type Registrar struct {
	Registry RegistrationRecords
	// CoordinatorName and SigningPrivKey sign the callback (keyId
	// registry@<coordinator>); nodes trust that key from their activation.
	CoordinatorName string
	SigningPrivKey  ed25519.PrivateKey
	// DialContext opens connections inside the VPN.
	DialContext func(ctx context.Context, addr string) (net.Conn, error)
	// Timeout bounds the callback (default 10s).
	Timeout time.Duration
	// Logger receives the outcome of every handshake (nil discards).
	Logger *slog.Logger

	mu      sync.Mutex
	perNode map[netip.Addr]*sync.Mutex
}

// RegistrationRecords is what the registrar needs of the registry.
type RegistrationRecords interface {
	Cluster() (records.Cluster, bool)
	Peer(ip netip.Addr) (records.Peer, bool)
	SetRegistrationSince(prev records.Peer, reevePubKey []byte, failure string) (records.Peer, error)
}

// The crash points of the registration handshake (see internal/crashpoint).
var (
	crashRegistrarVerified = crashpoint.New("coordinator/registrar/verified",
		"the reeve signed the nonce with the key it offered; the registration is not recorded")
	crashRegistrarRecorded = crashpoint.New("coordinator/registrar/recorded",
		"the registration is recorded; the node's reeve has no answer yet")
)

// ErrRegistration wraps every reason a handshake failed.
var ErrRegistration = errors.New("registration failed")

// Register runs the handshake for the node at nodeIP offering reevePubKey
// and records the outcome: registered, or unregistered with the reason.
//
// The handshakes of one node run one at a time, so that the outcome
// recorded last is that of the last attempt: a callback to a node that
// crashed fails late, and must not overwrite the registration its restart
// completed meanwhile. Across coordinators sharing the store, the outcome
// is recorded only if the node's registration is still the one the
// handshake started from (SetRegistrationSince); otherwise the attempt
// fails and the node's reeve registers again.
func (r *Registrar) Register(ctx context.Context, nodeIP netip.Addr, reevePubKey []byte) error {
	unlock := r.lock(nodeIP)
	defer unlock()
	node, ok := r.Registry.Peer(nodeIP)
	if !ok || node.State != records.StateActive || node.Role == records.RoleAdmin {
		return fmt.Errorf("%w: %s is not an active peer", ErrRegistration, nodeIP)
	}
	err := r.handshake(ctx, node, reevePubKey)
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	failure := ""
	if err != nil {
		failure = err.Error()
		log.Warn("registration failed", "node", node.Name, "err", err)
	} else {
		log.Info("node registered", "node", node.Name, "vpnIP", node.VPNIP)
		crashRegistrarVerified.Hit()
	}
	if _, rerr := r.Registry.SetRegistrationSince(node, reevePubKey, failure); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err == nil {
		crashRegistrarRecorded.Hit()
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRegistration, err)
	}
	return nil
}

// lock takes the node's handshake lock.
func (r *Registrar) lock(ip netip.Addr) (unlock func()) {
	r.mu.Lock()
	if r.perNode == nil {
		r.perNode = map[netip.Addr]*sync.Mutex{}
	}
	m := r.perNode[ip]
	if m == nil {
		m = &sync.Mutex{}
		r.perNode[ip] = m
	}
	r.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (r *Registrar) handshake(ctx context.Context, node records.Peer, reevePubKey []byte) error {
	if len(reevePubKey) != ed25519.PublicKeySize {
		return fmt.Errorf("offered reeve key has %d bytes, want %d", len(reevePubKey), ed25519.PublicKeySize)
	}
	cl, _ := r.Registry.Cluster()
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := netip.AddrPortFrom(node.VPNIP, serviceid.ReevePort).String()
	signer := signedrpc.KeySigner{KeyID: serviceid.ID(serviceid.Registry, r.CoordinatorName), PrivKey: r.SigningPrivKey}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(r.DialContext),
	}, signedrpc.DialOptions(signer.KeyID, signer)...)
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return err
	}
	// Closing waits for the connection's goroutines to end: the node's
	// registration does not wait for it.
	defer func() { go conn.Close() }()
	resp, err := reevepb.NewReeveClient(conn).Challenge(ctx, &reevepb.ChallengeRequest{Nonce: nonce})
	if err != nil {
		return fmt.Errorf("calling back the reeve at %s: %w", addr, err)
	}
	if !ed25519.Verify(reevePubKey, serviceid.ChallengeMessage(cl.ID, node.Name, nonce), resp.GetSignature()) {
		return fmt.Errorf("the reeve at %s did not sign the nonce with the key it offered", addr)
	}
	return nil
}
