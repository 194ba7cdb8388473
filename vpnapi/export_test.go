package vpnapi

import (
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
)

// Encoder encodes answers as a server does, memo included.
type Encoder struct{ peers peerLists }

// Encode is the server's encoding of u for the node named self.
func (e *Encoder) Encode(u update.Update, self string) (*vpnapipb.WatchUpdate, error) {
	return e.peers.updateToProto(u, self)
}

// KeepaliveSlot and KeepaliveDue are the server's.
var (
	KeepaliveSlot = keepaliveSlot
	KeepaliveDue  = keepaliveDue
)
