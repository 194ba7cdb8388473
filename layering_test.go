package fabric_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/fabricmesh/fabric"

// layer is a set of the module's packages, by path below the module.
type layer func(pkg string) bool

func under(dirs ...string) layer {
	return func(pkg string) bool {
		return slices.ContainsFunc(dirs, func(d string) bool { return pkg == d || strings.HasPrefix(pkg, d+"/") })
	}
}

// except is l without the packages of not.
func except(l, not layer) layer { return func(pkg string) bool { return l(pkg) && !not(pkg) } }

// wireContract is a generated protobuf package: the contract between a
// service and its callers, shared by both ends.
func wireContract(pkg string) bool { return strings.HasSuffix(pkg, "pb") }

// TestLayering keeps the project's layers apart, in the style of
// tailscale's deptest: a package may not depend, even indirectly, on a
// layer above it. internal/ holds leaves that import nothing of fabric
// outside internal/; testbed/ (the namespace lab, the in-process cluster,
// the demo and the benches) may use everything.
func TestLayering(t *testing.T) {
	rules := []struct {
		from      layer
		fromName  string
		forbidden layer
		why       string
	}{
		{under("core"), "core", under("pubapi", "vpnapi", "node", "cli", "testbed"),
			"core is the state machine; the APIs, the daemon and the CLI sit on top of it"},
		{under("internal"), "internal", under("core", "coordinator", "node", "cli", "pubapi", "vpnapi", "testbed"),
			"internal/ holds leaves that import nothing of the project above them"},
		{under("pubapi", "vpnapi"), "pubapi and vpnapi", under("node", "cli", "testbed"),
			"the API packages decode, call core or the coordinator, and encode; the daemon wires them"},
		{under("cli"), "cli", under("node", "coordinator", "testbed"),
			"the admin CLI talks to the coordinator through the pubapi only"},
		{under("coordinator"), "coordinator", except(under("node", "cli", "testbed", "pubapi"), wireContract),
			"the coordinator's logic does not know the daemon, the CLI or the public API (it may use the generated protobuf packages of the services it calls)"},
	}
	pkgs := listPackages(t)
	checked := 0
	for _, p := range pkgs {
		for _, r := range rules {
			if !r.from(p.rel) {
				continue
			}
			checked++
			for _, dep := range p.deps {
				if r.forbidden(dep) {
					t.Errorf("%s imports %s (directly or not): %s may not depend on it (%s)\n  import chain: %s",
						p.rel, dep, r.fromName, r.why, strings.Join(chain(pkgs, p.rel, dep), " -> "))
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package matched a layering rule: go list found nothing?")
	}
}

type pkgDeps struct {
	rel     string   // path below the module
	imports []string // direct imports of the module, below the module
	deps    []string // every dependency of the module, below the module
}

// listPackages lists the module's non-test packages with their
// dependencies inside the module.
func listPackages(t *testing.T) []pkgDeps {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is not in PATH (%v); imports cannot be listed", err)
	}
	out, err := exec.Command(goBin, "list", "-json=ImportPath,Imports,Deps", "./...").Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkgDeps
	for dec.More() {
		var p struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, pkgDeps{rel: rel(p.ImportPath), imports: inModule(p.Imports), deps: inModule(p.Deps)})
	}
	return pkgs
}

func rel(pkg string) string { return strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/") }

func inModule(pkgs []string) []string {
	var out []string
	for _, p := range pkgs {
		if strings.HasPrefix(p, module+"/") {
			out = append(out, rel(p))
		}
	}
	return out
}

// chain finds a path of direct imports from one package to another, to show
// where a forbidden dependency comes from.
func chain(pkgs []pkgDeps, from, to string) []string {
	imports := map[string][]string{}
	for _, p := range pkgs {
		imports[p.rel] = p.imports
	}
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []string
			for n := to; n != ""; n = prev[n] {
				path = append([]string{n}, path...)
			}
			return path
		}
		for _, next := range imports[cur] {
			if _, seen := prev[next]; !seen {
				prev[next] = cur
				queue = append(queue, next)
			}
		}
	}
	return []string{from, fmt.Sprintf("... %s", to)}
}
