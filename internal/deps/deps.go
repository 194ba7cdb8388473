// Package deps pins the project's dependencies while the packages that use
// them are being written. Delete once every import below is used elsewhere.
package deps

import (
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "golang.zx2c4.com/wireguard/device"
	_ "golang.zx2c4.com/wireguard/ipc"
	_ "golang.zx2c4.com/wireguard/tun"
	_ "golang.zx2c4.com/wireguard/wgctrl"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
)
