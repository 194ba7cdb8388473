#!/bin/bash
# build.sh builds fabric's bootable VM disk image from Debian 12 packages and
# the fabric .deb (see docs/image.md). It needs root (mmdebstrap in root
# mode, mkfs with device nodes) and no loop device or mount.
#
#   image/build.sh --deb FILE [--out DIR] [--lock FILE] [--update-lock]
#                  [--allow-lock-drift] [--force]
#
# Output in DIR (default image/out):
#   fabric.img      the raw disk: GPT, BIOS boot partition with GRUB, ext4 root
#   vmlinuz, initrd.img, cmdline   the same kernel, initrd and command line,
#                   for hypervisors that boot a kernel directly
#   manifest        inputs (SOURCE_DATE_EPOCH, .deb and lock checksums, build
#                   tools, the key of them all), installed packages and the
#                   image's SHA-256
#
# A build whose inputs have the key of DIR's manifest, and whose fabric.img
# still has the manifest's checksum, is skipped: the same inputs give the
# same bytes. --force builds anyway (e.g. to check that they do).
#
# Debian's mirror keeps only the current version of each package: once a
# pinned version is gone the build fails, unless --allow-lock-drift, which
# builds with the mirror's versions, says which differ and records them in
# the manifest (the image is then not the locked one; make image-lock pins
# the new versions).
#
# Reproducible: the same .deb, package lock (image/packages.lock: the exact
# Debian package versions), SOURCE_DATE_EPOCH and build tools give the same
# fabric.img, byte for byte. SOURCE_DATE_EPOCH defaults to the commit time
# of HEAD. Every timestamp in the file system is clamped to it, UUIDs are
# fixed, mke2fs sorts directory entries, and the initramfs honours it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$here/out
lock=$here/packages.lock
deb=
update_lock=false
allow_drift=false
force=false

usage() {
	sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--deb) deb=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--lock) lock=$2; shift 2 ;;
	--update-lock) update_lock=true; shift ;;
	--allow-lock-drift) allow_drift=true; shift ;;
	--force) force=true; shift ;;
	-h | --help) usage ;;
	*) echo "build.sh: unknown argument $1" >&2; usage ;;
	esac
done

die() { echo "build.sh: $*" >&2; exit 1; }
step() { printf '[%5ds] %s\n' "$((SECONDS - start))" "$*"; }
start=$SECONDS

[ -n "$deb" ] || die "--deb FILE is required (the fabric package, from make deb)"
[ -f "$deb" ] || die "--deb $deb: no such file"
deb=$(realpath "$deb")
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap in root mode)"
if ! $update_lock && [ ! -f "$lock" ]; then
	die "no package lock $lock; make one with --update-lock"
fi

# Fixed identifiers: every image has the same ones, so that the same inputs
# give the same bytes. They are unique per disk, not per VM, like those of a
# cloud image.
disk_guid=9f4c2a7e-3b1d-4e8a-a5c6-0d2f6b7e8a91
bios_part_guid=1b0c9d5e-7a3f-4c21-9e8d-5f6a7b8c9d01
root_part_guid=4a3e6f21-8c5d-4b7a-9f10-2e3d4c5b6a72
root_fs_uuid=6d1c3b2a-5f4e-4a9b-8c7d-1e2f3a4b5c6d
# Sizes in 512-byte sectors: the BIOS boot partition holds GRUB's core.img.
disk_mib=1024
bios_start=2048
bios_sectors=2048
root_start=4096
root_sectors=$((disk_mib * 2048 - root_start - 2048)) # leaves room for the backup GPT

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct)}
export LC_ALL=C.UTF-8 TZ=UTC

suite=bookworm
mirrors=(
	"deb http://deb.debian.org/debian $suite main"
	"deb http://deb.debian.org/debian $suite-updates main"
	"deb http://deb.debian.org/debian-security $suite-security main"
)
# What the image holds beyond apt's essential set. No recommends, no docs.
packages=(
	linux-image-cloud-amd64 initramfs-tools
	systemd systemd-sysv udev dbus systemd-timesyncd
	openssh-server
	iproute2 iputils-ping wireguard-tools kmod e2fsprogs procps zstd
	iperf3
)

for tool in mmdebstrap mkfs.ext4 debugfs sfdisk grub-mkimage systemd-analyze; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install mmdebstrap e2fsprogs fdisk grub-pc-bin systemd)"
done
grub_dir=/usr/lib/grub/i386-pc
[ -f "$grub_dir/boot.img" ] || die "$grub_dir/boot.img not found (apt-get install grub-pc-bin)"

# The key of every input: the package, the lock, SOURCE_DATE_EPOCH, the
# image's own files (this script included) and the build tools' versions.
tools() {
	for p in mmdebstrap e2fsprogs fdisk grub-pc-bin; do
		echo "tool $(dpkg-query -W -f='${Package} ${Version}' "$p")"
	done
}
inputs_key() {
	{
		echo "source_date_epoch $SOURCE_DATE_EPOCH"
		sha256sum "$deb" | cut -d' ' -f1
		[ -f "$lock" ] && sha256sum "$lock" | cut -d' ' -f1
		(cd "$here" && find build.sh customize.sh mke2fs.conf rootfs -type f -print0 | sort -z | xargs -0 sha256sum)
		(cd "$here" && find rootfs -printf '%P %y %m\n' | sort)
		tools
	} | sha256sum | cut -d' ' -f1
}
key=$(inputs_key)
# An image built with --allow-lock-drift is not the locked one: a build
# without the flag does not take it.
if ! $force && ! $update_lock && [ -f "$out/manifest" ] && [ -f "$out/fabric.img" ] &&
	grep -qx "inputs $key" "$out/manifest" &&
	{ $allow_drift || ! grep -q '^lock_drift ' "$out/manifest"; }; then
	want=$(awk '$1 == "image" { print $4 }' "$out/manifest")
	if [ "$(sha256sum "$out/fabric.img" | cut -d' ' -f1)" = "$want" ]; then
		step "up to date: $out/fabric.img sha256 $want was built from the same inputs (--force builds it again)"
		exit 0
	fi
fi

mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# pins writes an apt preferences file that holds every package of the lock
# at its version (1001 also allows downgrades from newer mirror contents).
pins() {
	awk '!/^#/ && NF >= 2 { printf "Package: %s\nPin: version %s\nPin-Priority: 1001\n\n", $1, $2 }' "$lock"
}

step "mmdebstrap $suite (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
hooks=()
if ! $update_lock; then
	pins >"$work/pins"
	hooks+=(--setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp '$work/pins' \"\$1/etc/apt/preferences.d/fabric-image-lock\"")
fi
mmdebstrap --mode=root --variant=apt --format=directory --quiet \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-include=/usr/share/locale/locale.alias' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' \
	--include="${packages[*]}" \
	--include="$deb" \
	--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
	"${hooks[@]}" \
	--customize-hook="ROOT_FS_UUID=$root_fs_uuid '$here/customize.sh' \"\$1\"" \
	"$suite" "$rootfs" "${mirrors[@]}"

# The package test of the image: the fabric package as installed in it
# runs, and its unit, with the image's drop-in, and the image's own units
# pass systemd-analyze verify in the image's root.
step "checking the fabric package in the image"
chroot "$rootfs" fabricd --version || die "fabricd --version fails in the image"
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no --root="$rootfs" \
	fabricd.service fabric-config-disk.service ssh.service >"$work/verify" 2>&1 || true
[ ! -s "$work/verify" ] || die "systemd-analyze verify in the image: $(cat "$work/verify")"

step "checking the installed packages against the lock"
chroot "$rootfs" dpkg-query -W -f='${Package} ${Version} ${Architecture}\n' |
	grep -v '^fabric ' | sort >"$work/installed"
if $update_lock; then
	{
		echo "# Debian packages of the fabric image, exactly (name version arch)."
		echo "# Made by image/build.sh --update-lock; image/build.sh installs these versions."
		cat "$work/installed"
	} >"$lock"
	step "wrote $lock ($(wc -l <"$work/installed") packages)"
elif ! diff <(grep -v '^#' "$lock") "$work/installed" >"$work/lockdiff"; then
	cat "$work/lockdiff" >&2
	why="the installed packages differ from $lock (< lock, > installed): the mirror no longer has a pinned version. Run make image-lock to pin the current ones"
	$allow_drift || die "$why"
	echo "build.sh: warning: $why; going on (--allow-lock-drift)" >&2
fi
: >>"$work/lockdiff"
rm -f "$rootfs/etc/apt/preferences.d/fabric-image-lock"

# The kernel, initrd and command line for direct kernel boot.
kernel=$(readlink "$rootfs/vmlinuz")
initrd=$(readlink "$rootfs/initrd.img")
cmdline="root=UUID=$root_fs_uuid ro console=ttyS0,115200"

step "clamping timestamps to $SOURCE_DATE_EPOCH"
find "$rootfs" -newermt "@$SOURCE_DATE_EPOCH" -print0 |
	xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

step "making the ext4 root file system"
cat >"$work/grub.cfg" <<EOF
set timeout=0
menuentry 'fabric' {
	search --no-floppy --fs-uuid --set=root $root_fs_uuid
	linux /vmlinuz $cmdline
	initrd /initrd.img
}
EOF
mkdir -p "$rootfs/boot/grub"
install -m 0644 "$work/grub.cfg" "$rootfs/boot/grub/grub.cfg"
touch --no-dereference --date="@$SOURCE_DATE_EPOCH" "$rootfs/boot/grub/grub.cfg" "$rootfs/boot/grub" "$rootfs/boot"
# E2FSPROGS_FAKE_TIME fixes the superblock's and the inodes' creation times;
# mke2fs takes the other inode times from the files: the mtimes are clamped
# above, but the kernel set each ctime when the file was written and each
# atime when it was last read, so debugfs sets both afterwards.
MKE2FS_CONFIG=$here/mke2fs.conf E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -t ext4 \
	-L fabric-root -U "$root_fs_uuid" -E "hash_seed=$root_fs_uuid,lazy_itable_init=0" \
	-d "$rootfs" "$work/root.ext4" "$((root_sectors / 2))k"
inodes=$(dumpe2fs -h "$work/root.ext4" 2>/dev/null | awk -F: '/^Inode count/ { print $2 + 0 }')
seq 1 "$inodes" | sed 's/.*/testi <&>/' >"$work/testi"
debugfs -f "$work/testi" "$work/root.ext4" 2>/dev/null |
	sed -n 's/^Inode \([0-9]*\) is marked in use$/sif <\1> ctime @'"$SOURCE_DATE_EPOCH"'\nsif <\1> atime @'"$SOURCE_DATE_EPOCH"'/p' >"$work/times"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$work/times" "$work/root.ext4" >/dev/null 2>"$work/debugfs.err" ||
	die "debugfs: $(cat "$work/debugfs.err")"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH e2fsck -fn "$work/root.ext4" >"$work/fsck" 2>&1 ||
	die "the root file system does not check clean: $(cat "$work/fsck")"

step "making the GPT disk and GRUB (BIOS)"
img=$work/fabric.img
truncate -s "${disk_mib}M" "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF
label: gpt
label-id: $disk_guid
first-lba: 2048
start=$bios_start, size=$bios_sectors, type=21686148-6449-6E6F-744E-656564454649, uuid=$bios_part_guid, name="bios-boot"
start=$root_start, size=$root_sectors, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_part_guid, name="fabric-root"
EOF
dd if="$work/root.ext4" of="$img" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
# core.img holds every module it needs and finds the root file system by
# UUID; it is written into the BIOS boot partition, and boot.img, the MBR
# code, is told where it starts (what grub-install does on a device).
cat >"$work/early.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --fs-uuid --set=root $root_fs_uuid
set prefix=(\$root)/boot/grub
EOF
grub-mkimage -O i386-pc -d "$grub_dir" -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub \
	biosdisk part_gpt ext2 search normal linux echo test configfile serial terminal
core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
[ "$core_sectors" -le "$bios_sectors" ] || die "core.img ($core_sectors sectors) does not fit the BIOS boot partition"
le64() { printf "$(printf '%016x' "$1" | sed 's/\(..\)/\1 /g' | awk '{ for (i = NF; i > 0; i--) printf "\\x%s", $i }')"; }
cp "$grub_dir/boot.img" "$work/boot.img"
le64 "$bios_start" | dd of="$work/boot.img" bs=1 seek=$((0x5c)) conv=notrunc status=none # GRUB_BOOT_MACHINE_KERNEL_SECTOR
printf '\x90\x90' | dd of="$work/boot.img" bs=1 seek=$((0x66)) conv=notrunc status=none # no floppy drive check
le64 $((bios_start + 1)) | dd of="$work/core.img" bs=1 seek=$((0x1f4)) conv=notrunc status=none # blocklist start
dd if="$work/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$img" bs=512 seek="$bios_start" conv=notrunc status=none

step "writing $out"
cp "$rootfs/$kernel" "$work/vmlinuz"
cp "$rootfs/$initrd" "$work/initrd.img"
echo "$cmdline" >"$work/cmdline"
sum=$(sha256sum "$img" | cut -d' ' -f1)
{
	echo "image fabric.img sha256 $sum"
	echo "source_date_epoch $SOURCE_DATE_EPOCH"
	echo "deb $(basename "$deb") sha256 $(sha256sum "$deb" | cut -d' ' -f1)"
	echo "lock sha256 $(sha256sum "$lock" | cut -d' ' -f1)"
	echo "kernel $kernel"
	echo "cmdline $cmdline"
	tools
	echo "inputs $key"
	sed -n 's/^\([<>]\)/lock_drift \1/p' "$work/lockdiff"
	sed 's/^/package /' "$work/installed"
} >"$work/manifest"
for f in fabric.img vmlinuz initrd.img cmdline manifest; do
	mv "$work/$f" "$out/$f"
done
step "done: $out/fabric.img sha256 $sum, $(du -m --apparent-size "$out/fabric.img" | cut -f1) MiB ($(du -m "$out/fabric.img" | cut -f1) MiB used)"
