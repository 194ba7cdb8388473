package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/fabricmesh/fabric/internal/clusterstatus"
	"github.com/fabricmesh/fabric/testbed/nshost"
)

// adminVPNUp puts the admin host on the VPN with `fabric vpn up`, shows
// `fabric vpn status`, and returns the cluster's status.
func (d *demo) adminVPNUp(ctx context.Context, f *nshost.Fabric) (clusterstatus.Status, error) {
	d.step("the admin host joins the VPN: fabric vpn up (a daemon that follows the cluster)")
	out, err := f.AdminVPNDaemonUp(ctx)
	d.show(out)
	if err != nil {
		return clusterstatus.Status{}, err
	}
	if err := d.run(ctx, f, "vpn", "status", "--admin-dir", f.AdminDir); err != nil {
		return clusterstatus.Status{}, err
	}
	return f.Status(ctx)
}

// adminVPN puts the admin host on the VPN with `fabric vpn up`, shows
// `fabric vpn status`, pings every VPN IP from the admin host, and shows
// that a restarted host (fabricd killed, its wireguard-go with it) reaches
// the admin at once.
func (d *demo) adminVPN(ctx context.Context, f *nshost.Fabric, restart *nshost.Host) error {
	st, err := d.adminVPNUp(ctx, f)
	if err != nil {
		return err
	}
	var ips []string
	for _, p := range st.Peers {
		ips = append(ips, p.VPNIP)
	}
	if err := nshost.PingAll(ctx, f.Admin, ips); err != nil {
		return fmt.Errorf("admin host: %w", err)
	}
	fmt.Fprintf(d.out, "  the admin host pings all %d VPN IPs\n", len(ips))
	if len(st.Admins) == 0 {
		return fmt.Errorf("the cluster status lists no admin")
	}
	admin := st.Admins[0].VPNIP
	d.step("killing fabricd on %s and starting it again: it pings the admin (%s) at once", restart.Name(), admin)
	if err := f.Daemon(restart).Kill(); err != nil {
		return err
	}
	if err := f.StartFabricd(ctx, restart); err != nil {
		return err
	}
	t0 := time.Now()
	for {
		_, err := restart.Run(ctx, "ping", "-c", "1", "-W", "1", admin)
		if err == nil {
			break
		}
		if time.Since(t0) > 30*time.Second {
			return fmt.Errorf("%s does not reach the admin after its restart: %w", restart.Name(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(d.out, "  %s reached the admin %.2fs after its fabricd listened again (it knows the admin's endpoint)\n", restart.Name(), time.Since(t0).Seconds())
	out, err := f.Watch(ctx, len(st.Peers), time.Minute, "pastiche")
	d.show(out)
	return err
}

// adminVPNDown takes the admin host off the VPN.
func (d *demo) adminVPNDown(ctx context.Context, f *nshost.Fabric) error {
	return d.run(ctx, f, "vpn", "down", "--admin-dir", f.AdminDir)
}
