package netmgr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// userspaceDevice is a wireguard-go device running in this process on a TUN
// device, served on the standard UAPI socket. The TUN device, and so the
// interface, lives exactly as long as the device.
type userspaceDevice struct {
	dev   *device.Device
	uapi  net.Listener
	index int           // ifindex of the TUN link
	done  chan struct{} // closed when the UAPI accept loop returns
	log   *slog.Logger
}

// startUserspace creates the TUN device name, starts wireguard-go on it and
// serves its UAPI socket. A stale socket from a dead process is replaced.
func startUserspace(name string, mtu int, log *slog.Logger) (_ *userspaceDevice, err error) {
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("creating tun device: %w", err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), wgLogger(log))
	defer func() {
		if err != nil {
			dev.Close()
		}
	}()
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up tun link: %w", err)
	}
	uapi, err := listenUAPI(name)
	if err != nil {
		return nil, err
	}
	u := &userspaceDevice{
		dev:   dev,
		uapi:  uapi,
		index: link.Attrs().Index,
		done:  make(chan struct{}),
		log:   log,
	}
	go u.serveUAPI(uapi, u.done)
	return u, nil
}

// listenUAPI opens /var/run/wireguard/<name>.sock. ipc.UAPIOpen removes a
// socket file nobody listens on, so a crashed process does not block us.
func listenUAPI(name string) (net.Listener, error) {
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return nil, fmt.Errorf("opening uapi socket: %w", err)
	}
	defer f.Close() // UAPIListen works on a duplicate of the descriptor.
	l, err := ipc.UAPIListen(name, f)
	if err != nil {
		return nil, fmt.Errorf("listening on uapi socket: %w", err)
	}
	return l, nil
}

// serveUAPI hands each UAPI connection (wg(8), wgctrl) to the device until
// the listener is closed or its socket file is deleted.
func (u *userspaceDevice) serveUAPI(l net.Listener, done chan<- struct{}) {
	defer close(done)
	for {
		c, err := l.Accept()
		if err != nil {
			u.log.Debug("uapi listener stopped", "error", err)
			return
		}
		go u.dev.IpcHandle(c)
	}
}

// ensureUAPI serves the UAPI socket again if its file was deleted, which
// leaves the device unreachable for wgctrl. wireguard-go notices the
// deletion through inotify and ends the accept loop some time later, so the
// file itself is checked too.
func (u *userspaceDevice) ensureUAPI(name string) error {
	select {
	case <-u.done:
	default:
		_, err := os.Stat(u.uapi.Addr().String())
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	u.uapi.Close()
	<-u.done
	l, err := listenUAPI(name)
	if err != nil {
		return err
	}
	u.log.Warn("uapi socket was removed, serving it again")
	u.uapi, u.done = l, make(chan struct{})
	go u.serveUAPI(l, u.done)
	return nil
}

// up brings the wireguard-go device up now rather than when it notices the
// TUN link come up.
func (u *userspaceDevice) up() error {
	if err := u.dev.Up(); err != nil {
		return fmt.Errorf("starting wireguard-go device: %w", err)
	}
	return nil
}

// close stops serving UAPI (removing the socket file) and closes the device,
// which removes the TUN interface.
func (u *userspaceDevice) close() {
	u.uapi.Close()
	<-u.done
	u.dev.Close()
}

// wgLogger routes wireguard-go's logs to log at debug level.
func wgLogger(log *slog.Logger) *device.Logger {
	logf := func(level string) func(string, ...any) {
		return func(format string, args ...any) {
			if !log.Enabled(context.Background(), slog.LevelDebug) {
				return
			}
			log.Debug(fmt.Sprintf(format, args...), "source", "wireguard-go", "wg_level", level)
		}
	}
	return &device.Logger{Verbosef: logf("verbose"), Errorf: logf("error")}
}
