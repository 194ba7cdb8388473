package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fabricmesh/fabric/internal/leakcheck"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// TestMain fails the run if a test left a gRPC server or connection
// goroutine running.
func TestMain(m *testing.M) {
	leakcheck.Main(m, 5*time.Second, "google.golang.org/grpc", "testbed/bench.")
}

func TestParseOnly(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "mesh,inproc,signed,pastiche", want: []string{"inproc", "mesh", "pastiche", "signed"}},
		{in: "signed", want: []string{"signed"}},
		{in: " signed , pastiche,", want: []string{"pastiche", "signed"}},
		{in: "signed,nope", wantErr: true},
		{in: "", wantErr: true},
		{in: ",", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			set, err := parseOnly(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseOnly(%q) error = %v, want error: %v", tt.in, err, tt.wantErr)
			}
			var got []string
			for name := range set {
				got = append(got, name)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseOnly(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseIperf3(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    float64
		wantErr bool
	}{
		{name: "received", out: `{"start":{},"end":{"sum_sent":{"bits_per_second":2e9},"sum_received":{"bits_per_second":1.5e9}}}`, want: 1.5e9},
		{name: "noise before the JSON", out: "warning: something\n{\"end\":{\"sum_received\":{\"bits_per_second\":8}}}", want: 8},
		{name: "iperf3 error", out: `{"start":{},"end":{},"error":"unable to connect to server"}`, wantErr: true},
		{name: "no sum_received", out: `{"end":{}}`, wantErr: true},
		{name: "not JSON", out: "iperf3: error", wantErr: true},
		{name: "truncated", out: `{"end":{"sum_received":`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseIperf3(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseIperf3 error = %v, want error: %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseIperf3 = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestVerifiedSum(t *testing.T) {
	tests := []struct {
		name, out, want string
	}{
		{
			name: "send output",
			out:  "sent f (3 bytes) pastiche@a -> pastiche@b: stored as pastiche/f\nsha256 verified by pastiche@b: 00ff\n",
			want: "00ff",
		},
		{name: "no digest line", out: "sent f\n", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := verifiedSum(tt.out); got != tt.want {
				t.Errorf("verifiedSum = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteBenchFile(t *testing.T) {
	tests := []struct {
		name string
		size int64
	}{
		{name: "empty", size: 0},
		{name: "partial MiB", size: 1000},
		{name: "3 MiB and a bit", size: 3*mib + 17},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			sum, err := writeBenchFile(path, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(data)) != tt.size {
				t.Fatalf("wrote %d bytes, want %d", len(data), tt.size)
			}
			if want := sha256.Sum256(data); sum != hex.EncodeToString(want[:]) {
				t.Errorf("returned SHA-256 %s, the file has %x", sum, want)
			}
			if tt.size > 0 && bytes.Count(data, []byte{0}) > len(data)/100+8 {
				t.Errorf("%d of %d bytes are zero, want random-looking data", bytes.Count(data, []byte{0}), len(data))
			}
			for i := int64(mib); i+mib <= tt.size; i += mib {
				if bytes.Equal(data[i-mib:i], data[i:i+mib]) {
					t.Errorf("MiB %d equals the one before", i/mib)
				}
			}
		})
	}
}

// runMain runs Main with args and returns its exit code, its lines and
// the figures of its last line.
func runMain(t *testing.T, args ...string) (int, []string, map[string]float64) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	t.Logf("fabric-bench %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	var figures map[string]float64
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &figures); err != nil {
		t.Fatalf("last line is not the JSON of the figures: %v", err)
	}
	return code, lines, figures
}

func checkFigures(t *testing.T, figures map[string]float64, names []string) {
	t.Helper()
	var got []string
	for name, v := range figures {
		got = append(got, name)
		if v <= 0 {
			t.Errorf("figure %s = %v, want > 0", name, v)
		}
	}
	slices.Sort(got)
	slices.Sort(names)
	if diff := cmp.Diff(names, got); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
}

func TestMainSigned(t *testing.T) {
	code, _, figures := runMain(t, "--only", "signed", "--runs", "2", "--signed-time", "20ms")
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	checkFigures(t, figures, []string{
		"unsigned_unary_us", "signed_unary_us", "signed_unary_ratio",
		"unsigned_parallel_calls_per_s", "signed_parallel_calls_per_s", "signed_parallel_ratio",
		"ed25519_sign_us", "ed25519_verify_us",
	})
}

func TestMainBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--only", "nope"}, {"--runs", "0"}, {"--bogus"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if code := Main(context.Background(), args, io.Discard, io.Discard); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
		})
	}
}

func TestMainSkipsNamespaceScenariosWithoutRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as root: the namespace scenarios would run, not be skipped")
	}
	code, lines, figures := runMain(t, "--only", "mesh,pastiche")
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if len(figures) != 0 {
		t.Errorf("figures %v, want none", figures)
	}
	for _, prefix := range []string{"mesh: namespace-host scenarios skipped: ", "pastiche: namespace-host scenario skipped: "} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) }) {
			t.Errorf("no line starting %q", prefix)
		}
	}
}

// TestPasticheScenario runs the pastiche scenario with a small file on
// namespace hosts.
func TestPasticheScenario(t *testing.T) {
	if err := nshost.Check(); err != nil {
		t.Skipf("namespace hosts: %v", err)
	}
	if testing.Short() {
		t.Skip("builds the binaries and starts a cluster: not in -short")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skipf("needs iperf3: %v", err)
	}
	binDir := os.Getenv("FABRIC_BIN_DIR") // make test sets it to bin/
	if binDir == "" {
		binDir = t.TempDir()
		if err := nshost.BuildBinaries(context.Background(), binDir); err != nil {
			t.Fatal(err)
		}
	}
	code, _, figures := runMain(t, "--bin-dir", binDir, "--only", "pastiche", "--runs", "1",
		"--pastiche-mib", "8", "--iperf-time", "1s")
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	checkFigures(t, figures, []string{
		"iperf3_wg_mb_per_s", "pastiche_8mib_mb_per_s", "pastiche_vs_iperf3_ratio",
		"pastiche_8mib_from_coordinator_mb_per_s", "pastiche_from_coordinator_vs_iperf3_ratio",
	})
}
