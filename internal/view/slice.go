package view

import "strings"

// A Slice is the part of a node's view shared with one other node: the
// whitelist entries whose client is on that node and the endpoint entries
// whose endpoint is on that node. A change of one node's records changes,
// in every other node's view, only that node's slice, so views are kept
// current by replacing slices (see ApplySlices). Catalog entries and
// entries between a node's own endpoints and clients are in no slice: they
// change only with the node's own records, which bring a full view.
type Slice struct {
	// Node is the other node's name.
	Node      string
	Whitelist []WhitelistEntry
	Endpoints []EndpointEntry
}

// Empty reports whether the slice holds no entry (the node shares nothing,
// or no longer).
func (s Slice) Empty() bool { return len(s.Whitelist) == 0 && len(s.Endpoints) == 0 }

// NodeOf returns the node part of an ID "<service>@<node>" ("" if none).
func NodeOf(id string) string {
	if i := strings.LastIndexByte(id, '@'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// ApplySlices returns v with the entries shared with each slice's node
// replaced by the slice's, sorted. v is not modified.
func (v View) ApplySlices(slices []Slice) View {
	replaced := make(map[string]bool, len(slices))
	for _, s := range slices {
		replaced[s.Node] = true
	}
	var out View
	for _, e := range v.Whitelist {
		if !replaced[NodeOf(e.Client)] {
			out.Whitelist = append(out.Whitelist, e)
		}
	}
	for _, e := range v.Endpoints {
		if !replaced[NodeOf(e.Endpoint)] {
			out.Endpoints = append(out.Endpoints, e)
		}
	}
	out.Catalog = append(out.Catalog, v.Catalog...)
	for _, s := range slices {
		out.Whitelist = append(out.Whitelist, s.Whitelist...)
		out.Endpoints = append(out.Endpoints, s.Endpoints...)
	}
	out.Sort()
	return out
}

// Held is a node's view held slice by slice, so that applying a delta
// costs the size of its slices, not of the view.
type Held struct {
	self   string
	slices map[string]Slice
	// local holds the entries between the node's own endpoints and
	// clients, and the catalog.
	local View
}

// NewHeld returns an empty view of the node named self.
func NewHeld(self string) *Held { return &Held{self: self, slices: map[string]Slice{}} }

// SetFull replaces the view with v.
func (h *Held) SetFull(v View) {
	h.slices = map[string]Slice{}
	h.local = View{Catalog: append([]CatalogEntry(nil), v.Catalog...)}
	for _, e := range v.Whitelist {
		if node := NodeOf(e.Client); node == h.self {
			h.local.Whitelist = append(h.local.Whitelist, e)
		} else {
			s := h.slices[node]
			s.Node = node
			s.Whitelist = append(s.Whitelist, e)
			h.slices[node] = s
		}
	}
	for _, e := range v.Endpoints {
		if node := NodeOf(e.Endpoint); node == h.self {
			h.local.Endpoints = append(h.local.Endpoints, e)
		} else {
			s := h.slices[node]
			s.Node = node
			s.Endpoints = append(s.Endpoints, e)
			h.slices[node] = s
		}
	}
}

// Replace replaces the slice of s.Node (an empty s drops it) and returns
// the slice it replaced.
func (h *Held) Replace(s Slice) Slice {
	old := h.slices[s.Node]
	if s.Empty() {
		delete(h.slices, s.Node)
	} else {
		h.slices[s.Node] = s
	}
	return old
}

// Slice returns the slice of node.
func (h *Held) Slice(node string) Slice { return h.slices[node] }

// Local returns the entries between the node's own endpoints and clients,
// and the catalog.
func (h *Held) Local() View { return h.local }

// Nodes returns the names of the nodes with a slice.
func (h *Held) Nodes() []string {
	out := make([]string, 0, len(h.slices))
	for n := range h.slices {
		out = append(out, n)
	}
	return out
}

// View returns the whole view, sorted.
func (h *Held) View() View {
	v := View{
		Whitelist: append([]WhitelistEntry(nil), h.local.Whitelist...),
		Endpoints: append([]EndpointEntry(nil), h.local.Endpoints...),
		Catalog:   append([]CatalogEntry(nil), h.local.Catalog...),
	}
	for _, s := range h.slices {
		v.Whitelist = append(v.Whitelist, s.Whitelist...)
		v.Endpoints = append(v.Endpoints, s.Endpoints...)
	}
	if len(v.Whitelist) == 0 {
		v.Whitelist = nil
	}
	if len(v.Endpoints) == 0 {
		v.Endpoints = nil
	}
	if len(v.Catalog) == 0 {
		v.Catalog = nil
	}
	v.Sort()
	return v
}
