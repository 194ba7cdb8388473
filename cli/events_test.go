package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestEventsUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad output", []string{"events", "-o", "yaml"}, `-o "yaml": want table or json`},
		{"since not a number", []string{"events", "--since", "latest"}, `invalid argument "latest" for "--since"`},
		{"negative since", []string{"events", "--since", "-3"}, `invalid argument "-3" for "--since"`},
		{"an argument", []string{"events", "h2"}, `unknown command "h2" for "fabric events"`},
		{"no timeout", []string{"events", "--follow", "--timeout", "0s"}, "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(tt.args...)
			if code != 2 || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, output %q; want 2 and %q", code, out, tt.want)
			}
		})
	}
}

// fakeEvents serves one scripted stream per Events call.
type fakeEvents struct {
	mu      sync.Mutex
	streams []fakeStream
	sinces  []uint64 // of each call
	dialErr error
}

// fakeStream is a script: its events, then end (nil: wait for the
// context, as a followed stream does).
type fakeStream struct {
	events []*pubapipb.Event
	end    error
}

func (f *fakeEvents) dial() (eventStreamer, error) {
	if f.dialErr != nil {
		return nil, f.dialErr
	}
	return f, nil
}

func (f *fakeEvents) Events(ctx context.Context, req *pubapipb.EventsRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[pubapipb.Event], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sinces = append(f.sinces, req.GetSince())
	if len(f.streams) == 0 {
		return nil, status.Error(codes.Unavailable, "no more scripted streams")
	}
	s := f.streams[0]
	f.streams = f.streams[1:]
	return &fakeClientStream{ctx: ctx, script: s}, nil
}

func (f *fakeEvents) Close() error { return nil }

type fakeClientStream struct {
	grpc.ClientStream
	ctx    context.Context
	script fakeStream
}

func (s *fakeClientStream) Recv() (*pubapipb.Event, error) {
	if len(s.script.events) > 0 {
		ev := s.script.events[0]
		s.script.events = s.script.events[1:]
		return ev, nil
	}
	if s.script.end != nil {
		return nil, s.script.end
	}
	<-s.ctx.Done()
	return nil, status.FromContextError(s.ctx.Err()).Err()
}

func ev(rev uint64, kind, node string) *pubapipb.Event {
	return &pubapipb.Event{Revision: rev, Kind: kind, Node: node, At: 1_777_629_600_000 + int64(rev)}
}

func TestEventReader(t *testing.T) {
	broken := status.Error(codes.Unavailable, "connection reset")
	tests := []struct {
		name       string
		follow     bool
		since      uint64
		streams    []fakeStream
		dialErr    error
		want       []string
		wantSinces []uint64
		wantErr    string
	}{
		{
			name:    "the past, then the end",
			since:   3,
			streams: []fakeStream{{events: []*pubapipb.Event{ev(4, "activated", "h2"), ev(5, "registered", "h2")}, end: io.EOF}},
			want:    []string{"4 activated h2", "5 registered h2"}, wantSinces: []uint64{3},
		},
		{
			name:   "a break in the middle of a revision resumes without repeating",
			follow: true,
			streams: []fakeStream{
				{events: []*pubapipb.Event{ev(5, "cluster-created", "h1"), ev(6, "removed", "h2"), ev(6, "applied", "h3"), ev(7, "offline", "h3")}, end: broken},
				// Resumed from 6, the last revision wholly printed: 7 again,
				// then its second event, then new ones.
				{events: []*pubapipb.Event{ev(7, "offline", "h3"), ev(7, "offline", "h4"), ev(8, "online", "h3")}, end: broken},
				{events: []*pubapipb.Event{ev(8, "online", "h3"), ev(9, "activated", "h5")}},
			},
			want:       []string{"5 cluster-created h1", "6 removed h2", "6 applied h3", "7 offline h3", "7 offline h4", "8 online h3", "9 activated h5"},
			wantSinces: []uint64{0, 6, 7},
		},
		{
			name:       "without follow a break fails",
			streams:    []fakeStream{{events: []*pubapipb.Event{ev(1, "cluster-created", "h1")}, end: broken}},
			want:       []string{"1 cluster-created h1"},
			wantSinces: []uint64{0},
			wantErr:    "reading the events after revision 0: unreachable: connection reset",
		},
		{
			name:       "refused: no retry",
			follow:     true,
			streams:    []fakeStream{{end: status.Error(codes.PermissionDenied, "not an admin")}},
			wantSinces: []uint64{0},
			wantErr:    "permission denied: not an admin",
		},
		{
			name:       "compacted: says how to start over",
			follow:     true,
			since:      2,
			streams:    []fakeStream{{end: status.Error(codes.OutOfRange, "events after revision 2: the change log no longer holds those events")}},
			wantSinces: []uint64{2},
			wantErr:    "no longer holds those events; --since 0 starts from the oldest revision the log still holds",
		},
		{
			name:    "no coordinator answers: gives up",
			follow:  true,
			since:   9,
			dialErr: errors.New("no coordinator of the admin bundle answers: unreachable"),
			wantErr: "no coordinator answered for 50ms (--timeout): no coordinator of the admin bundle answers: unreachable; resume with --since 9",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeEvents{streams: tt.streams, dialErr: tt.dialErr}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var got []string
			var warn bytes.Buffer
			r := &eventReader{
				dial: f.dial,
				print: func(e *pubapipb.Event) error {
					got = append(got, fmt.Sprintf("%d %s %s", e.GetRevision(), e.GetKind(), e.GetNode()))
					if tt.follow && tt.wantErr == "" && len(got) == len(tt.want) {
						cancel() // the last stream waits for more: interrupted
					}
					return nil
				},
				warn: &warn, follow: tt.follow, since: tt.since, giveUpAfter: 50 * time.Millisecond,
			}
			err := r.run(ctx)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("run = %v, want %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("printed (-want +got):\n%s", diff)
			}
			if tt.wantSinces != nil {
				if diff := cmp.Diff(tt.wantSinces, f.sinces); diff != "" {
					t.Errorf("--since of each call (-want +got):\n%s", diff)
				}
			}
			if tt.follow && len(tt.streams) > 1 && !strings.Contains(warn.String(), "the events stream broke (unreachable: connection reset); reconnecting from revision 6") {
				t.Errorf("stderr:\n%s", warn.String())
			}
		})
	}
}

func TestEventPrinter(t *testing.T) {
	events := []*pubapipb.Event{
		{Revision: 1, At: 1_777_629_600_000, Kind: "cluster-created", Node: "h1", VpnIp: "203.0.113.1", Detail: "cluster c1, VPN 203.0.113.0/24"},
		{Revision: 12, At: 1_777_629_601_250, Kind: "registration-failed", Node: "h2", VpnIp: "203.0.113.3", Detail: "calling back the reeve"},
		{Revision: 14, At: 1_777_629_602_000, Kind: "users"},
	}
	tests := []struct {
		format, want string
	}{
		{"table", `REVISION  TIME                      KIND                 NODE          VPN IP           DETAIL
1         2026-05-01T10:00:00.000Z  cluster-created      h1            203.0.113.1      cluster c1, VPN 203.0.113.0/24
12        2026-05-01T10:00:01.250Z  registration-failed  h2            203.0.113.3      calling back the reeve
14        2026-05-01T10:00:02.000Z  users                -             -
`},
		{"json", `{"revision":1,"at":"2026-05-01T10:00:00.000Z","kind":"cluster-created","node":"h1","vpnIP":"203.0.113.1","detail":"cluster c1, VPN 203.0.113.0/24"}
{"revision":12,"at":"2026-05-01T10:00:01.250Z","kind":"registration-failed","node":"h2","vpnIP":"203.0.113.3","detail":"calling back the reeve"}
{"revision":14,"at":"2026-05-01T10:00:02.000Z","kind":"users"}
`},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var out bytes.Buffer
			p := newEventPrinter(&out, tt.format)
			for _, e := range events {
				if err := p.print(e); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}
