package demo

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fabricmesh/fabric/testbed/nshost"
)

// transfer is one `fabric pastiche send` of the demo and what the rules
// should make of it.
type transfer struct {
	from, to *nshost.Host
	allowed  bool // expected
	result   string
	ok       bool // the outcome was the expected one
}

// transfers shows the service catalog, then sends a file within each horde
// and across the hordes both ways, and sums up what was allowed and
// refused. An outcome other than the rules' is an error.
func (d *demo) transfers(ctx context.Context, f *nshost.Fabric, hosts []*nshost.Host) error {
	d.step("fabric services: the service catalog and the connectivity rules")
	out, err := f.CLI(ctx, "services", "--admin-dir", f.AdminDir)
	d.show(out)
	if err != nil {
		return err
	}
	file := filepath.Join(f.Admin.Dir(), "pastiche-demo.bin")
	if err := writeRandom(file, 8<<20); err != nil {
		return err
	}
	half := len(hosts) / 2
	sharks, jets := hosts[:half], hosts[half:]
	ts := []*transfer{
		{from: sharks[1], to: sharks[half-1], allowed: true},
		{from: jets[0], to: jets[len(jets)-1], allowed: true},
		{from: sharks[1], to: jets[0], allowed: false},
		{from: jets[len(jets)-1], to: sharks[0], allowed: false},
	}
	for _, t := range ts {
		d.step("fabric pastiche send --from %s --to %s pastiche-demo.bin (8 MiB; %s)", t.from.Name(), t.to.Name(), expectation(t.allowed))
		out, err := f.CLI(ctx, "pastiche", "send", "--from", t.from.Name(), "--to", t.to.Name(), file, "--admin-dir", f.AdminDir)
		d.show(out)
		t.ok = (err == nil) == t.allowed
		switch {
		case err == nil:
			t.result = "allowed, SHA-256 verified by the target"
		case strings.Contains(out, "permission denied"):
			t.result = "refused: permission denied"
			t.ok = t.ok && !stored(t.to)
		default:
			t.result = "failed: " + lastLine(out)
			t.ok = false
		}
	}
	d.step("summary: pastiche transfers under the rule pastiche -> pastiche (horde)")
	failed := 0
	for _, t := range ts {
		mark := "as the rules say"
		if !t.ok {
			mark = "UNEXPECTED"
			failed++
		}
		fmt.Fprintf(d.out, "  %-7s %-8s -> %-7s %-8s  %-42s %s\n", t.from.Name(), "("+hordeOf(hosts, t.from)+")",
			t.to.Name(), "("+hordeOf(hosts, t.to)+")", t.result, mark)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d transfers did not go as the rules say", failed, len(ts))
	}
	return nil
}

func expectation(allowed bool) string {
	if allowed {
		return "same horde: allowed"
	}
	return "across hordes: must be refused"
}

func hordeOf(hosts []*nshost.Host, h *nshost.Host) string {
	for i, x := range hosts {
		if x == h {
			return horde(i, len(hosts))
		}
	}
	return "?"
}

// stored reports whether h's pastiche directory holds the demo's file.
func stored(h *nshost.Host) bool {
	_, err := os.Stat(filepath.Join(h.Dir(), "state", "pastiche", "pastiche-demo.bin"))
	return err == nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// writeRandom writes n random bytes to path.
func writeRandom(path string, n int) error {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
