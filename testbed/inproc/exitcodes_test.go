package inproc_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/cli"
)

// exitCodeRow is one row of the README's exit-code table.
type exitCodeRow struct {
	code     int
	when     string
	commands [][]string // each example, without "fabric"
}

// readmeExitCodes reads the README's exit-code table, between its
// markers.
func readmeExitCodes(t *testing.T) []exitCodeRow {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	begin, end := strings.Index(text, "<!-- exit codes: begin -->"), strings.Index(text, "<!-- exit codes: end -->")
	if begin < 0 || end < begin {
		t.Fatal("README.md has no exit-code table between <!-- exit codes: begin --> and <!-- exit codes: end -->")
	}
	example := regexp.MustCompile("`fabric ([^`]*)`")
	var rows []exitCodeRow
	for _, line := range strings.Split(text[begin:end], "\n")[1:] {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 3 || cells[0] == "exit" || strings.HasPrefix(cells[0], "---") {
			continue
		}
		code, err := strconv.Atoi(cells[0])
		if err != nil {
			t.Fatalf("README exit-code row %q: exit %q is not a number", line, cells[0])
		}
		row := exitCodeRow{code: code, when: cells[1]}
		for _, m := range example.FindAllStringSubmatch(cells[2], -1) {
			row.commands = append(row.commands, strings.Fields(m[1]))
		}
		if len(row.commands) == 0 {
			t.Fatalf("README exit-code row %q has no example", line)
		}
		rows = append(rows, row)
	}
	if len(rows) < 10 {
		t.Fatalf("README exit-code table: %d rows, want the whole table", len(rows))
	}
	return rows
}

// TestREADMEExitCodes runs every example of the README's exit-code table
// against an in-process cluster laid out as the README's: coord
// (192.0.2.10) and node1, node2 in horde sharks, node3 in jets; 192.0.2.99
// is an endpoint where no fabricd listens. The examples run in the order
// of the table, in a directory with the files they name, with the admin
// bundle in $FABRIC_ADMIN_DIR.
func TestREADMEExitCodes(t *testing.T) {
	rows := readmeExitCodes(t)
	ctx := context.Background()
	c, peers := newCluster(t, 0)
	names := []struct{ name, horde, readme string }{
		{"coord", "sharks", "192.0.2.10:7443"}, {"node1", "sharks", "192.0.2.11:7443"},
		{"node2", "sharks", "192.0.2.12:7443"}, {"node3", "jets", "192.0.2.13:7443"},
	}
	endpoints := map[string]string{"192.0.2.99:7443": closedEndpoint(t)}
	for _, n := range names {
		p, err := c.AddPeer(ctx, n.name, n.horde)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
		endpoints[n.readme] = p.Endpoint.String()
	}
	if out, err := c.Activate(ctx, peers[0], peers[1:], "203.0.113.0/24"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cliOK(t, c, "watch", "--n", "4", "--services", "pastiche", "--timeout", "30s", "--admin-dir", c.AdminDir())

	dir := t.TempDir()
	key, err := os.ReadFile(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]struct {
		data string
		mode os.FileMode
	}{
		"bootstrap.key":  {string(key), 0o600},
		"loose.key":      {string(key), 0o644},
		"bad-rules.yaml": {"rules:\n  - {client: pastiche, service: pastiche, scop: cluster}\n", 0o600},
		"report.pdf":     {"%PDF-1.4 a report\n", 0o600},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	t.Setenv("FABRIC_ADMIN_DIR", c.AdminDir())

	for _, row := range rows {
		for _, args := range row.commands {
			readme := "fabric " + strings.Join(args, " ")
			t.Run(readme, func(t *testing.T) {
				for i, a := range args {
					for from, to := range endpoints {
						a = strings.ReplaceAll(a, from, to)
					}
					args[i] = a
				}
				var stdout, stderr bytes.Buffer
				cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				defer cancel()
				code := cli.Run(cctx, args, &stdout, &stderr)
				t.Logf("exit %d; stderr:\n%s", code, stderr.String())
				if code != row.code {
					t.Errorf("%s (%s): exit %d, the README says %d\nstdout:\n%s\nstderr:\n%s", readme, row.when, code, row.code, stdout.String(), stderr.String())
				}
				if code != 0 && !strings.HasPrefix(stderr.String(), "fabric: ") {
					t.Errorf("%s: stderr does not start with \"fabric: \":\n%s", readme, stderr.String())
				}
				if strings.Contains(stderr.String(), "goes on at the coordinator") {
					t.Errorf("%s: says the work goes on at the coordinator:\n%s", readme, stderr.String())
				}
			})
		}
	}
}

// closedEndpoint is a loopback endpoint where nothing listens.
func closedEndpoint(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}
