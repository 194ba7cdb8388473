package signedrpc

import (
	"context"
	"crypto/ed25519"
	"fmt"
)

// KeySigner is a Signer holding one private key, for a client that signs
// for itself rather than through a reeve (the coordinator's registry).
type KeySigner struct {
	KeyID   string
	PrivKey ed25519.PrivateKey
}

// Sign implements Signer.
func (s KeySigner) Sign(_ context.Context, keyID string, data []byte) ([]byte, error) {
	if keyID != s.KeyID {
		return nil, fmt.Errorf("no key for %q", keyID)
	}
	return ed25519.Sign(s.PrivKey, data), nil
}
