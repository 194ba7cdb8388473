package steward_test

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fabricmesh/fabric/internal/rules"
	"github.com/fabricmesh/fabric/internal/serviceid"
	"github.com/fabricmesh/fabric/internal/view"

	"github.com/fabricmesh/fabric/coordinator/steward"
)

// viewCase is the input of a golden view test, read from a testdata file:
//
//	# comment
//	node <name> <horde|-> <VPN IP|->
//	endpoint <service>@<node> <port>
//	client <service>@<node> [<public key as text>]
//	rules
//	<the rest of the file is the rules file; without this line, the
//	default rules apply>
type viewCase struct {
	nodes     []steward.Node
	endpoints []steward.Endpoint
	clients   []steward.Client
	rules     rules.Rules
}

func readCase(tb testing.TB, path string) viewCase {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	c := viewCase{rules: rules.DefaultRules()}
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == "rules" {
			rulesFile := strings.Join(lines[i+1:], "\n")
			if c.rules, err = rules.Parse(path, []byte(rulesFile)); err != nil {
				tb.Fatalf("rules: %v", err)
			}
			break
		}
		if err := c.parseLine(f); err != nil {
			tb.Fatalf("%s:%d: %v", path, i+1, err)
		}
	}
	return c
}

func (c *viewCase) parseLine(f []string) error {
	switch {
	case f[0] == "node" && len(f) == 4:
		n := steward.Node{Name: f[1], Horde: dash(f[2])}
		if f[3] != "-" {
			ip, err := netip.ParseAddr(f[3])
			if err != nil {
				return err
			}
			n.VPNIP = ip
		}
		c.nodes = append(c.nodes, n)
	case f[0] == "endpoint" && len(f) == 3:
		svc, node, err := serviceid.Parse(f[1])
		if err != nil {
			return err
		}
		port, err := strconv.ParseUint(f[2], 10, 16)
		if err != nil {
			return err
		}
		c.endpoints = append(c.endpoints, steward.Endpoint{Service: svc, Node: node, Port: uint16(port)})
	case f[0] == "client" && (len(f) == 2 || len(f) == 3):
		svc, node, err := serviceid.Parse(f[1])
		if err != nil {
			return err
		}
		cl := steward.Client{Service: svc, Node: node}
		if len(f) == 3 {
			cl.PubKey = []byte(f[2])
		}
		c.clients = append(c.clients, cl)
	default:
		return fmt.Errorf("bad line %q", strings.Join(f, " "))
	}
	return nil
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// viewNodes returns the known nodes in input order, then the unknown node
// names the records refer to, sorted.
func (c viewCase) viewNodes() (known, unknown []string) {
	for _, n := range c.nodes {
		if !slices.Contains(known, n.Name) {
			known = append(known, n.Name)
		}
	}
	var refs []string
	for _, e := range c.endpoints {
		refs = append(refs, e.Node)
	}
	for _, cl := range c.clients {
		refs = append(refs, cl.Node)
	}
	for _, r := range refs {
		if !slices.Contains(known, r) && !slices.Contains(unknown, r) {
			unknown = append(unknown, r)
		}
	}
	slices.Sort(unknown)
	return known, unknown
}

// formatView writes a view as readable text, one entry a line.
func formatView(b *strings.Builder, v view.View) {
	fmt.Fprintf(b, "  whitelist%s\n", none(len(v.Whitelist)))
	for _, e := range v.Whitelist {
		fmt.Fprintf(b, "    %s <- %s key %s\n", e.Endpoint, e.Client, e.PubKey)
	}
	fmt.Fprintf(b, "  endpoints%s\n", none(len(v.Endpoints)))
	for _, e := range v.Endpoints {
		fmt.Fprintf(b, "    %s -> %s %s at %s\n", e.Client, e.Service, e.Endpoint, e.Address)
	}
	fmt.Fprintf(b, "  catalog%s\n", none(len(v.Catalog)))
	for _, e := range v.Catalog {
		fmt.Fprintf(b, "    %s -> %s\n", e.Client, e.Service)
	}
}

func none(n int) string {
	if n == 0 {
		return ": none"
	}
	return ""
}
