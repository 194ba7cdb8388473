package registry

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/fabricmesh/fabric/internal/records"
	"github.com/fabricmesh/fabric/internal/store"
)

// Write is one key the registry writes: its JSON value, or its deletion.
// Every change-log entry holds the writes of its change, so that another
// coordinator following the log makes the same change in its memory.
type Write struct {
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value,omitempty"`
	Deleted bool            `json:"deleted,omitempty"`
}

func put(key string, v any) (Write, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Write{}, fmt.Errorf("encoding %s: %w", key, err)
	}
	return Write{Key: key, Value: b}, nil
}

// load applies one stored key to s: the records, the counters and the
// users (other keys are not state; the log is read apart). Open loads
// every key with it, and a follower every write of the log it follows.
func (s *state) load(key string, value []byte, deleted bool) error {
	switch {
	case key == keyCluster:
		var c records.Cluster
		if err := store.DecodeJSON(key, value, &c); err != nil {
			return err
		}
		s.cluster = &c
	case key == keyNextIP:
		return store.DecodeJSON(key, value, &s.nextIP)
	case key == keySSHUsersRevision:
		return store.DecodeJSON(key, value, &s.usersRev)
	case strings.HasPrefix(key, prefixPeers):
		if deleted {
			return fmt.Errorf("%s: peer records are never deleted", key)
		}
		var p records.Peer
		if err := store.DecodeJSON(key, value, &p); err != nil {
			return err
		}
		s.putPeer(p)
	case strings.HasPrefix(key, prefixSvcs):
		ip, err := netip.ParseAddr(key[len(prefixSvcs):])
		if err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		if deleted {
			delete(s.services, ip)
			return nil
		}
		var sv records.Services
		if err := store.DecodeJSON(key, value, &sv); err != nil {
			return err
		}
		s.services[ip] = sv
	case strings.HasPrefix(key, prefixLive):
		ip, err := netip.ParseAddr(key[len(prefixLive):])
		if err != nil {
			return fmt.Errorf("decoding %s: %w", key, err)
		}
		if deleted {
			delete(s.liveness, ip)
			return nil
		}
		var l Liveness
		if err := store.DecodeJSON(key, value, &l); err != nil {
			return err
		}
		s.liveness[ip] = l
	case strings.HasPrefix(key, prefixSSHUsers):
		name := key[len(prefixSSHUsers):]
		s.deleteUser(name)
		if deleted {
			return nil
		}
		var u records.SSHUser
		if err := store.DecodeJSON(key, value, &u); err != nil {
			return err
		}
		s.putUser(u)
	}
	return nil
}

// loadAll reads the whole registry from tx into s.
func (s *state) loadAll(tx store.Tx) error {
	err := tx.Scan("registry/", func(key string, value []byte) error {
		if strings.HasPrefix(key, prefixLog) || strings.HasPrefix(key, prefixBeats) {
			return nil
		}
		return s.load(key, value, false)
	})
	if err != nil {
		return err
	}
	return store.GetJSON(tx, keyRevision, &s.rev)
}

// apply makes the writes of a change in s, at revision rev.
func (s *state) applyWrites(rev uint64, writes []Write) error {
	for _, w := range writes {
		if err := s.load(w.Key, w.Value, w.Deleted); err != nil {
			return err
		}
	}
	s.rev = rev
	return nil
}
