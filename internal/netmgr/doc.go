// Package netmgr is fabric's network manager: it creates and owns a peer's
// WireGuard interface: fabricd's (driven by core) and the admin's (`fabric
// vpn up`).
//
// A Manager uses kernel WireGuard when the kernel supports it and otherwise
// runs wireguard-go in-process on a TUN device, exposing the standard UAPI
// socket so that wg(8) and wgctrl can read and configure it. In both cases the
// device is configured with wgctrl and the interface (address, MTU, link
// state) with netlink. SetPeers applies only the difference between the live
// device and the desired peer set.
//
// All operations act in the network namespace of the calling process.
package netmgr
