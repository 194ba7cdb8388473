#!/bin/bash
# customize.sh ROOTFS: mmdebstrap's customize hook for the fabric image (see
# build.sh). Everything is installed; this adds the image's own files and
# makes the result independent of the build machine.
set -euo pipefail

root=$1
here=$(cd "$(dirname "$0")" && pwd)
: "${ROOT_FS_UUID:?}" "${SOURCE_DATE_EPOCH:?}"

# The image's own files (units, the config disk reader, sshd settings),
# dated SOURCE_DATE_EPOCH: their times in the checkout depend on when git
# wrote them.
tar -C "$here/rootfs" --owner=0 --group=0 --mtime="@$SOURCE_DATE_EPOCH" -cf - . | tar -C "$root" --no-same-owner -xf -
chmod 0755 "$root/usr/lib/fabric-image/config-disk"

cat >"$root/etc/fstab" <<EOF
UUID=$ROOT_FS_UUID / ext4 errors=remount-ro 0 1
EOF
# The initramfs was made before fstab existed: again, so that it checks the
# root file system (fsck) before mounting it.
chroot "$root" update-initramfs -u -k all
echo fabric >"$root/etc/hostname"
cat >"$root/etc/hosts" <<EOF
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
# mmdebstrap copies the build machine's resolver config; VMs get theirs from
# systemd-networkd (DHCP) or the config disk.
rm -f "$root/etc/resolv.conf"

# No SSH host keys in the image: each VM makes its own (ssh.service.d).
rm -f "$root"/etc/ssh/ssh_host_*

systemctl --root="$root" enable systemd-networkd.service fabric-config-disk.service fabricd.service ssh.service
# An appliance without LVM or apt's daily list updates: these only take the
# CPU at boot.
systemctl --root="$root" mask e2scrub_reap.service e2scrub_all.timer
systemctl --root="$root" disable apt-daily.timer apt-daily-upgrade.timer

# Files that record when or where they were made.
rm -f "$root"/var/lib/dpkg/*-old "$root"/var/cache/debconf/*-old
rm -rf "$root"/var/log/journal/* "$root"/var/cache/apt/*.bin
