package signedrpc

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
)

// Layout of a signed stream message (see the package documentation).
const (
	envelopeMagic  = "FSM1"
	envelopeHeader = len(envelopeMagic) + sha256.Size + ed25519.SignatureSize // 100
	streamContext  = "fabric signed stream v1\n"
)

// Reasons a stream message is refused.
var (
	errUnsignedMessage = errors.New("is not signed (no FSM1 envelope)")
	errShortEnvelope   = errors.New("has a truncated FSM1 envelope")
	errOutOfChain      = errors.New("does not follow the previous message (tampered with, reordered, after a dropped message, or from another stream)")
	errBadMessageSig   = errors.New("has a bad signature")
)

type chain [sha256.Size]byte

// firstChain is chain_0: the SHA-256 of the call's raw signature.
func firstChain(callSignature []byte) chain { return sha256.Sum256(callSignature) }

// next is chain_i = SHA-256(chain_{i-1} || SHA-256(payload_i)).
func (c chain) next(payload []byte) chain {
	ps := sha256.Sum256(payload)
	h := sha256.New()
	h.Write(c[:])
	h.Write(ps[:])
	var n chain
	h.Sum(n[:0])
	return n
}

// signingInput is what sig_i signs: "fabric signed stream v1\n" || chain_i.
func (c chain) signingInput() []byte {
	return append([]byte(streamContext), c[:]...)
}

// seal builds the envelope of payload, whose chain is c, signed with sig.
func seal(c chain, sig, payload []byte) []byte {
	env := make([]byte, 0, envelopeHeader+len(payload))
	env = append(env, envelopeMagic...)
	env = append(env, c[:]...)
	env = append(env, sig...)
	return append(env, payload...)
}

// open checks an envelope that must follow prev, signed by pub, and
// returns its chain and payload.
func open(prev chain, pub ed25519.PublicKey, env []byte) (chain, []byte, error) {
	if len(env) < len(envelopeMagic) || string(env[:len(envelopeMagic)]) != envelopeMagic {
		return chain{}, nil, errUnsignedMessage
	}
	if len(env) < envelopeHeader {
		return chain{}, nil, fmt.Errorf("%w (%d bytes, the header is %d)", errShortEnvelope, len(env), envelopeHeader)
	}
	claimed := env[len(envelopeMagic) : len(envelopeMagic)+sha256.Size]
	sig := env[len(envelopeMagic)+sha256.Size : envelopeHeader]
	payload := env[envelopeHeader:]
	c := prev.next(payload)
	if subtle.ConstantTimeCompare(claimed, c[:]) != 1 {
		return chain{}, nil, errOutOfChain
	}
	if !ed25519.Verify(pub, c.signingInput(), sig) {
		return chain{}, nil, errBadMessageSig
	}
	return c, payload, nil
}
