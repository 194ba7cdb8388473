package pastiche

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sharksAndJets is two hordes: h1 and h2 are sharks, h3 is a jet.
var sharksAndJets = map[string]string{"h1": "sharks", "h2": "sharks", "h3": "jets"}

func TestSendWithinHorde(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	want := map[string][sha256.Size]byte{}
	for _, tt := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"chunk minus one", ChunkSize - 1},
		{"one chunk", ChunkSize},
		{"chunk plus one", ChunkSize + 1},
		{"several chunks", 3*ChunkSize + 12345},
		{"ünïcode näme.txt", 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := testData(tt.size, uint64(tt.size))
			got, err := tc.relay.Send(context.Background(), "h1", "h2", tt.name, int64(tt.size), bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			sum := sha256.Sum256(data)
			wantResult := SendResult{From: "pastiche@h1", To: "pastiche@h2", Name: tt.name, Size: int64(tt.size), SHA256: sum}
			if diff := cmp.Diff(wantResult, got); diff != "" {
				t.Errorf("Send result (-want +got):\n%s", diff)
			}
			want[tt.name] = sum
		})
	}
	if diff := cmp.Diff(want, storedFiles(t, tc.peers["h2"].dir)); diff != "" {
		t.Errorf("files on h2 (-want +got):\n%s", diff)
	}
	for _, node := range []string{"h1", "h3"} {
		if diff := cmp.Diff(map[string][sha256.Size]byte{}, storedFiles(t, tc.peers[node].dir)); diff != "" {
			t.Errorf("files on %s (-want +got):\n%s", node, diff)
		}
	}
}

func TestSendReplacesFile(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	for i, data := range [][]byte{testData(5000, 1), testData(3000, 2)} {
		if _, err := tc.relay.Send(context.Background(), "h2", "h1", "report.bin", int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		want := map[string][sha256.Size]byte{"report.bin": sha256.Sum256(data)}
		if diff := cmp.Diff(want, storedFiles(t, tc.peers["h1"].dir)); diff != "" {
			t.Errorf("after send %d, files on h1 (-want +got):\n%s", i, diff)
		}
	}
}

// errReader fails after its data.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestSendRefused(t *testing.T) {
	tc := newTestCluster(t, sharksAndJets)
	data := testData(3*ChunkSize, 7)
	errBroken := errors.New("disk on fire")
	for _, tt := range []struct {
		test, from, to, name string
		size                 int64
		body                 io.Reader
		code                 codes.Code
		msg                  string
	}{
		{"other horde", "h1", "h3", "f", 3, strings.NewReader("abc"), codes.PermissionDenied,
			"pastiche@h1 may not send to h3: h3's pastiche is not among the endpoints its rules allow"},
		{"unknown target", "h1", "h9", "f", 3, strings.NewReader("abc"), codes.PermissionDenied, "pastiche@h1 may not send to h9"},
		{"to itself", "h1", "h1", "f", 3, strings.NewReader("abc"), codes.InvalidArgument, "pastiche@h1 cannot send to its own node h1"},
		{"no target", "h1", "", "f", 3, strings.NewReader("abc"), codes.InvalidArgument, "no node named"},
		{"unknown sender", "h9", "h1", "f", 3, strings.NewReader("abc"), codes.PermissionDenied,
			"fabric-admin@c may not send to h9: h9's pastiche is not among the endpoints"},
		{"coordinator as sender", "c", "h1", "f", 3, strings.NewReader("abc"), codes.PermissionDenied, "fabric-admin@c may not send to c"},
		{"path as name", "h1", "h2", "etc/passwd", 3, strings.NewReader("abc"), codes.InvalidArgument, "contains '/'"},
		{"hidden name", "h1", "h2", ".bashrc", 3, strings.NewReader("abc"), codes.InvalidArgument, "starts with '.'"},
		{"negative size", "h1", "h2", "f", -1, strings.NewReader(""), codes.InvalidArgument, "negative size"},
		{"body too short", "h1", "h2", "f", int64(len(data)) + 1, bytes.NewReader(data), codes.InvalidArgument, "ended after 3145728 of its announced 3145729 bytes"},
		{"body too long", "h1", "h2", "f", int64(len(data)) - 1, bytes.NewReader(data), codes.InvalidArgument, "longer than its announced 3145727 bytes"},
		{"body fails", "h1", "h2", "f", int64(len(data)) + 1, &errReader{data: data, err: errBroken}, codes.Unknown, "disk on fire"},
	} {
		t.Run(tt.test, func(t *testing.T) {
			_, err := tc.relay.Send(context.Background(), tt.from, tt.to, tt.name, tt.size, tt.body)
			checkStatus(t, err, tt.code, tt.msg)
		})
	}
	tc.stopAll()
	tc.checkNothingStored(t)
}

// checkStatus fails unless err has code and its message contains msg.
func checkStatus(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("error %v, want code %v and a message containing %q", err, code, msg)
	}
}
