package view

import (
	"bytes"
	"cmp"
	"slices"
)

// WhitelistEntry lets client Client, whose key is PubKey, call the local
// endpoint Endpoint (both IDs).
type WhitelistEntry struct {
	Endpoint string
	Client   string
	PubKey   []byte
}

// EndpointEntry tells the local client Client that it may call endpoint
// Endpoint of service Service at Address ("<VPN IP>:<port>").
type EndpointEntry struct {
	Client   string
	Service  string
	Endpoint string
	Address  string
}

// CatalogEntry tells the local client Client that it may use service
// Service, whether or not any endpoint of it exists yet.
type CatalogEntry struct {
	Client  string
	Service string
}

// View is what one node's reeve needs to know: the whitelists of its
// endpoints, and the endpoints and catalog of its clients. Lists are sorted
// (see Sort) and nil when empty.
type View struct {
	Whitelist []WhitelistEntry
	Endpoints []EndpointEntry
	Catalog   []CatalogEntry
}

// Keys identify an entry within a view, whatever its value (public key or
// address), so that views can be diffed. The three kinds of entries have
// distinct prefixes. IDs are joined with spaces, which neither service
// names nor node names contain.

// Key returns the entry's key: "whitelist <endpoint> <client>".
func (e WhitelistEntry) Key() string { return "whitelist " + e.Endpoint + " " + e.Client }

// Key returns the entry's key: "endpoint <client> <endpoint>".
func (e EndpointEntry) Key() string { return "endpoint " + e.Client + " " + e.Endpoint }

// Key returns the entry's key: "catalog <client> <service>".
func (e CatalogEntry) Key() string { return "catalog " + e.Client + " " + e.Service }

func (e WhitelistEntry) equal(o WhitelistEntry) bool {
	return e.Endpoint == o.Endpoint && e.Client == o.Client && bytes.Equal(e.PubKey, o.PubKey)
}

func (e EndpointEntry) equal(o EndpointEntry) bool { return e == o }

func (e CatalogEntry) equal(o CatalogEntry) bool { return e == o }

// Sort sorts the view's lists in place into their canonical order: the
// whitelist by endpoint then client, endpoints by client, service,
// endpoint, and the catalog by client then service.
func (v View) Sort() {
	sortFunc(v.Whitelist, func(a, b WhitelistEntry) int {
		return cmp.Or(cmp.Compare(a.Endpoint, b.Endpoint), cmp.Compare(a.Client, b.Client))
	})
	sortFunc(v.Endpoints, func(a, b EndpointEntry) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Endpoint, b.Endpoint))
	})
	sortFunc(v.Catalog, func(a, b CatalogEntry) int {
		return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.Service, b.Service))
	})
}

// sortFunc sorts s, first checking in one pass whether it already is:
// views are built in nearly their order, and often exactly in it.
func sortFunc[T any](s []T, c func(a, b T) int) {
	if !slices.IsSortedFunc(s, c) {
		slices.SortFunc(s, c)
	}
}

// Diff returns what turns old into new: the entries of new that are absent
// from old or differ from old's entry of the same key, and the sorted keys
// of old's entries that new lacks. Both views must hold unique keys, as
// every computed view does.
func Diff(old, new View) (upserts View, removed []string) {
	upserts.Whitelist, removed = diffList(old.Whitelist, new.Whitelist, removed)
	upserts.Endpoints, removed = diffList(old.Endpoints, new.Endpoints, removed)
	upserts.Catalog, removed = diffList(old.Catalog, new.Catalog, removed)
	slices.Sort(removed)
	return upserts, removed
}

// entry is what Diff and Apply need of a view's entry.
type entry[T any] interface {
	Key() string
	equal(T) bool
}

func diffList[T entry[T]](old, new []T, removed []string) (upserts []T, _ []string) {
	oldByKey := make(map[string]T, len(old))
	for _, e := range old {
		oldByKey[e.Key()] = e
	}
	newKeys := make(map[string]bool, len(new))
	for _, e := range new {
		newKeys[e.Key()] = true
		if o, ok := oldByKey[e.Key()]; !ok || !o.equal(e) {
			upserts = append(upserts, e)
		}
	}
	for _, e := range old {
		if !newKeys[e.Key()] {
			removed = append(removed, e.Key())
		}
	}
	return upserts, removed
}

// Apply returns v with the entries whose keys are in removed dropped, then
// upserts added or replacing v's entries of the same key, sorted. Keys in
// removed that v lacks are ignored. v is not modified; the result shares
// public key bytes with v and upserts.
func (v View) Apply(upserts View, removed []string) View {
	gone := make(map[string]bool, len(removed))
	for _, k := range removed {
		gone[k] = true
	}
	out := View{
		Whitelist: applyList(v.Whitelist, upserts.Whitelist, gone),
		Endpoints: applyList(v.Endpoints, upserts.Endpoints, gone),
		Catalog:   applyList(v.Catalog, upserts.Catalog, gone),
	}
	out.Sort()
	return out
}

func applyList[T entry[T]](cur, upserts []T, gone map[string]bool) []T {
	replaced := make(map[string]bool, len(upserts))
	for _, e := range upserts {
		replaced[e.Key()] = true
	}
	var out []T
	for _, e := range cur {
		if !gone[e.Key()] && !replaced[e.Key()] {
			out = append(out, e)
		}
	}
	return append(out, upserts...)
}
