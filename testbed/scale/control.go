package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The control API: the driver's requests to the simulator, JSON over HTTP
// on a unix socket.

type endpointsResp struct {
	Endpoints []string `json:"endpoints"`
	Names     []string `json:"names"`
}

type statusResp struct {
	Nodes     int      `json:"nodes"`
	Activated int      `json:"activated"` // activated, not removed
	Joined    int      `json:"joined"`    // services recorded, not removed
	Removed   int      `json:"removed"`
	Watching  int      `json:"watching"`
	Converged int      `json:"converged"` // joined, with as many peers and slices as expected
	MaxRev    uint64   `json:"maxRev"`
	Messages  int64    `json:"messages"`         // answers received, all nodes
	Bytes     int64    `json:"bytes"`            // bytes received on the watches, all nodes
	Errors    []string `json:"errors,omitempty"` // the last error of a few nodes
}

type probeReq struct {
	Index int `json:"index"`
}

type probeResp struct {
	MaxRev uint64 `json:"maxRev"`
}

type probeWaitReq struct {
	Slice   bool          `json:"slice"` // also wait for the slices of the target's horde
	Timeout time.Duration `json:"timeout"`
}

// probeWaitResp has one entry per live node other than the target (slices:
// per live node of the target's horde).
type probeWaitResp struct {
	PeerAt       []int64 `json:"peerAt"` // unix ns
	PeerBytes    []int64 `json:"peerBytes"`
	SliceAt      []int64 `json:"sliceAt"`
	SliceBytes   []int64 `json:"sliceBytes"`
	Missing      int     `json:"missing"` // nodes that had not applied the peer change at the timeout
	MissingSlice int     `json:"missingSlice"`
}

type endpointReq struct {
	Index    int    `json:"index"`
	Endpoint string `json:"endpoint"`
}

type endpointResp struct {
	SentAt int64 `json:"sentAt"`
}

type verifyReq struct {
	Store string `json:"store"` // bolt:PATH
}

type verifyResp struct {
	Converged  bool     `json:"converged"`
	Nodes      int      `json:"nodes"`
	Mismatches int      `json:"mismatches"`
	Examples   []string `json:"examples,omitempty"`
	Took       float64  `json:"tookS"`
}

func (s *simulator) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /endpoints", func(w http.ResponseWriter, r *http.Request) {
		var out endpointsResp
		for _, n := range s.nodes {
			out.Endpoints = append(out.Endpoints, fmt.Sprintf("%s:%d", n.pubIP, nodePubPort))
			out.Names = append(out.Names, n.name)
		}
		reply(w, out, nil)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		extra, _ := strconv.Atoi(r.URL.Query().Get("extraPeers"))
		reply(w, s.status(extra), nil)
	})
	mux.HandleFunc("POST /probe", func(w http.ResponseWriter, r *http.Request) {
		var req probeReq
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		out, err := s.startProbe(req.Index)
		reply(w, out, err)
	})
	mux.HandleFunc("POST /probe/wait", func(w http.ResponseWriter, r *http.Request) {
		var req probeWaitReq
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		out, err := s.waitProbe(r.Context(), req)
		reply(w, out, err)
	})
	mux.HandleFunc("POST /endpoint", func(w http.ResponseWriter, r *http.Request) {
		var req endpointReq
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		out, err := s.changeEndpoint(req)
		reply(w, out, err)
	})
	mux.HandleFunc("POST /verify", func(w http.ResponseWriter, r *http.Request) {
		var req verifyReq
		if err := decode(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		out, err := s.verify(req.Store)
		reply(w, out, err)
	})
	return mux
}

func decode(r *http.Request, v any) error {
	return json.NewDecoder(r.Body).Decode(v)
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// status counts the nodes in each phase and those that hold every peer
// (the active simulated nodes and extraPeers more: the coordinator and the
// admin) and every slice (one per other joined node of their horde, and
// the coordinator's).
func (s *simulator) status(extraPeers int) statusResp {
	out := statusResp{Nodes: len(s.nodes)}
	joinedIn := map[string]int{}
	for _, n := range s.nodes {
		switch n.getPhase() {
		case phaseActivated:
			out.Activated++
		case phaseJoined:
			out.Activated++
			out.Joined++
			joinedIn[n.horde]++
		case phaseRemoved:
			out.Removed++
		}
	}
	for _, n := range s.nodes {
		ph := n.getPhase()
		n.mu.Lock()
		out.MaxRev = max(out.MaxRev, n.state.rev)
		out.Messages += n.messages.Load()
		out.Bytes += n.received.Load()
		if n.stream != nil {
			out.Watching++
		}
		if ph == phaseJoined && n.state.nPeers == out.Activated+extraPeers && n.state.nSlices == joinedIn[n.horde] {
			out.Converged++
		}
		if n.lastErr != "" && ph != phaseJoined && len(out.Errors) < 5 {
			out.Errors = append(out.Errors, n.name+": "+n.lastErr)
		}
		n.mu.Unlock()
	}
	return out
}

// startProbe makes node index the probed node and returns the highest
// revision a node applied.
func (s *simulator) startProbe(index int) (probeResp, error) {
	if index < 0 || index >= len(s.nodes) {
		return probeResp{}, fmt.Errorf("no node %d", index)
	}
	old := s.probe.Load()
	epoch := uint64(1)
	if old != nil {
		epoch = old.epoch + 1
	}
	var out probeResp
	for _, n := range s.nodes {
		n.mu.Lock()
		out.MaxRev = max(out.MaxRev, n.state.rev)
		n.probe = probeResult{epoch: epoch}
		n.mu.Unlock()
	}
	s.probe.Store(&probe{epoch: epoch, target: s.nodes[index]})
	return out, nil
}

// waitProbe waits until every live node other than the target applied a
// change of the target's peer (and, with Slice, every joined node of its
// horde a change of its slice), or the timeout.
func (s *simulator) waitProbe(ctx context.Context, req probeWaitReq) (probeWaitResp, error) {
	p := s.probe.Load()
	if p == nil {
		return probeWaitResp{}, fmt.Errorf("no probe")
	}
	deadline := time.Now().Add(req.Timeout)
	for {
		out := s.probeResults(p, req.Slice)
		if (out.Missing == 0 && out.MissingSlice == 0) || time.Now().After(deadline) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *simulator) probeResults(p *probe, slice bool) probeWaitResp {
	var out probeWaitResp
	for _, n := range s.nodes {
		ph := n.getPhase()
		if n == p.target || (ph != phaseActivated && ph != phaseJoined) {
			continue
		}
		n.mu.Lock()
		r := n.probe
		n.mu.Unlock()
		if r.epoch != p.epoch || r.peerAt == 0 {
			out.Missing++
		} else {
			out.PeerAt = append(out.PeerAt, r.peerAt)
			out.PeerBytes = append(out.PeerBytes, r.peerBytes)
		}
		if !slice || n.horde != p.target.horde || ph != phaseJoined {
			continue
		}
		if r.epoch != p.epoch || r.sliceAt == 0 {
			out.MissingSlice++
		} else {
			out.SliceAt = append(out.SliceAt, r.sliceAt)
			out.SliceBytes = append(out.SliceBytes, r.sliceBytes)
		}
	}
	return out
}

// changeEndpoint has node index report a new WireGuard endpoint on its
// watch, as a node does when its address changed.
func (s *simulator) changeEndpoint(req endpointReq) (endpointResp, error) {
	if req.Index < 0 || req.Index >= len(s.nodes) {
		return endpointResp{}, fmt.Errorf("no node %d", req.Index)
	}
	at := time.Now().UnixNano()
	if !s.nodes[req.Index].report(req.Endpoint) {
		return endpointResp{}, fmt.Errorf("node %d has no watch open", req.Index)
	}
	return endpointResp{SentAt: at}, nil
}

// controlClient is the driver's side of the control API.
type controlClient struct {
	http *http.Client
}

func newControlClient(socket string) *controlClient {
	return &controlClient{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

func (c *controlClient) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://simulator"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("simulator %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("simulator %s: %s", path, bytes.TrimSpace(msg))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
