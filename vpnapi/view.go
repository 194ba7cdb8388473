package vpnapi

import (
	"github.com/fabricmesh/fabric/internal/view"
	"github.com/fabricmesh/fabric/vpnapi/vpnapipb"
)

// ViewToProto converts a view (or the upserts of a change) to the wire.
func ViewToProto(v view.View, removed []string, full bool) *vpnapipb.View {
	out := &vpnapipb.View{Full: full, Removed: removed}
	for _, w := range v.Whitelist {
		out.Whitelist = append(out.Whitelist, &vpnapipb.WhitelistEntry{Endpoint: w.Endpoint, Client: w.Client, PubKey: w.PubKey})
	}
	for _, e := range v.Endpoints {
		out.Endpoints = append(out.Endpoints, &vpnapipb.EndpointEntry{Client: e.Client, Service: e.Service, Endpoint: e.Endpoint, Address: e.Address})
	}
	for _, c := range v.Catalog {
		out.Catalog = append(out.Catalog, &vpnapipb.CatalogEntry{Client: c.Client, Service: c.Service})
	}
	return out
}

// ViewFromProto converts back.
func ViewFromProto(p *vpnapipb.View) (v view.View, removed []string, full bool) {
	for _, w := range p.GetWhitelist() {
		v.Whitelist = append(v.Whitelist, view.WhitelistEntry{Endpoint: w.GetEndpoint(), Client: w.GetClient(), PubKey: w.GetPubKey()})
	}
	for _, e := range p.GetEndpoints() {
		v.Endpoints = append(v.Endpoints, view.EndpointEntry{Client: e.GetClient(), Service: e.GetService(), Endpoint: e.GetEndpoint(), Address: e.GetAddress()})
	}
	for _, c := range p.GetCatalog() {
		v.Catalog = append(v.Catalog, view.CatalogEntry{Client: c.GetClient(), Service: c.GetService()})
	}
	return v, p.GetRemoved(), p.GetFull()
}
