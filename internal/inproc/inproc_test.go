package inproc_test

import (
	"context"
	"testing"
	"time"

	"github.com/fabricmesh/fabric/internal/inproc"
)

func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := inproc.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var peers []*inproc.Peer
	for _, name := range []string{"c", "n1", "n2"} {
		p, err := c.AddPeer(ctx, name, "sharks")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, p)
	}
	out, err := c.Activate(ctx, peers[0], peers[1:], "203.0.113.0/24")
	t.Log(out)
	if err != nil {
		t.Fatal(err)
	}
	out, err = c.Watch(ctx, 3, 10*time.Second)
	t.Log(out)
	if err != nil {
		t.Fatal(err)
	}
	out, _ = c.CLI(ctx, "status", "--admin-dir", c.AdminDir())
	t.Log(out)
	for _, p := range peers {
		t.Logf("%s: %+v", p.Name, p.Network.Device())
	}
}
