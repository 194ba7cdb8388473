package vpnapi

import (
	"sync"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/update"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The feed gives every watcher at the same revision the same peer list
// (a full snapshot's every peer, the peers of a span; see Feed): the
// server encodes such a list once and sends its bytes to each of them,
// instead of converting and encoding about 10,000 peers per snapshot of a
// large cluster (with it, one full answer at 10,000 nodes costs 41 ms of
// work instead of 82, BenchmarkFullAnswer).
const (
	// sharedPeersMin is the length from which a list is memoized: the
	// few peers of a delta cost less to encode than to look up.
	sharedPeersMin = 64
	// sharedPeersKept is how many encoded lists are kept, the newest:
	// watchers are at a few revisions at once.
	sharedPeersKept = 8
)

// peerLists memoizes the wire encoding of shared peer lists, by the
// identity of the list: its first element's address and its length. The
// list is kept referenced with its encoding, so its memory cannot be
// reused by another list while the entry lives.
type peerLists struct {
	mu    sync.Mutex
	lists []encodedPeers // oldest first
}

type encodedPeers struct {
	list []records.Peer
	wire []byte // field 3 of WatchUpdate, repeated
}

// encoded returns the wire encoding of ps as WatchUpdate's peers.
func (c *peerLists) encoded(ps []records.Peer) ([]byte, error) {
	c.mu.Lock()
	for _, e := range c.lists {
		if &e.list[0] == &ps[0] && len(e.list) == len(ps) {
			c.mu.Unlock()
			return e.wire, nil
		}
	}
	c.mu.Unlock()
	// Encoded outside the lock: a list two watchers encode at once is
	// encoded twice, and kept once more, which is harmless.
	var wire []byte
	for _, p := range ps {
		b, err := proto.Marshal(PeerToProto(p))
		if err != nil {
			return nil, err
		}
		wire = protowire.AppendTag(wire, peersField, protowire.BytesType)
		wire = protowire.AppendBytes(wire, b)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lists) == sharedPeersKept {
		c.lists = append(c.lists[:0:0], c.lists[1:]...)
	}
	c.lists = append(c.lists, encodedPeers{list: ps, wire: wire})
	return wire, nil
}

// peersField is WatchUpdate's field number of peers.
var peersField = protowire.Number((&vpnapipb.WatchUpdate{}).ProtoReflect().Descriptor().Fields().ByName("peers").Number())

// updateToProto is UpdateToProto with a long peer list's encoding taken
// from the memo: the message carries it as raw fields, which proto
// encodes as they are after the others (fields may come in any order, and
// the elements of a repeated field in the order given), so the node
// decodes the same message.
func (c *peerLists) updateToProto(u update.Update, self string) (*vpnapipb.WatchUpdate, error) {
	if len(u.Peers) < sharedPeersMin {
		return UpdateToProto(u, self)
	}
	wire, err := c.encoded(u.Peers)
	if err != nil {
		return nil, err
	}
	u.Peers = nil
	msg, err := UpdateToProto(u, self)
	if err != nil {
		return nil, err
	}
	msg.ProtoReflect().SetUnknown(protoreflect.RawFields(wire))
	return msg, nil
}
