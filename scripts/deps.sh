#!/bin/sh
# Installs the Debian packages a make target needs: scripts/deps.sh TARGET...
# (test, demo, bench, deb, proto, image, vm). As root it runs apt-get for the missing
# ones; otherwise it names them and goes on, so that what can run without
# them still runs (the tests that need root skip anyway). Go itself is not
# a Debian package here: it must be at /usr/local/go (see go.mod for the
# version).
set -eu

pkgs=
for target in "$@"; do
	case "$target" in
	# the namespace hosts of the demo, the bench and the multi-host tests
	demo | bench) pkgs="$pkgs make wireguard-tools iproute2 iputils-ping iperf3 bash procps etcd-server" ;;
	# -race needs cgo; the package test makes a Debian root and runs lintian;
	# etcd-server: the etcd store's tests, the demos and benches on etcd run
	# real etcd members (testbed/etcdlab)
	test) pkgs="$pkgs make gcc libc6-dev wireguard-tools iproute2 iputils-ping iperf3 bash procps mmdebstrap lintian systemd etcd-server" ;;
	deb) pkgs="$pkgs gcc libc6-dev" ;;
	proto) pkgs="$pkgs protobuf-compiler" ;;
	# make image: mmdebstrap, the root file system, the GPT disk, GRUB;
	# systemd-analyze verifies the units in the image
	image) pkgs="$pkgs mmdebstrap debian-archive-keyring e2fsprogs fdisk grub-pc-bin systemd" ;;
	# make vm-test and vm-demo: qemu, the config disks, ssh into the VMs
	vm) pkgs="$pkgs make wireguard-tools iproute2 iputils-ping iperf3 bash procps qemu-system-x86 qemu-utils dosfstools mtools openssh-client" ;;
	*)
		echo "deps.sh: unknown target $target (want test, demo, bench, deb, proto, image or vm)" >&2
		exit 2
		;;
	esac
done

if ! command -v dpkg-query >/dev/null; then
	echo "deps.sh: not a Debian system; make sure these are installed:$pkgs" >&2
	exit 0
fi
missing=
for p in $pkgs; do
	case " $missing " in *" $p "*) continue ;; esac
	if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing Debian packages:$missing (run as root, or: sudo apt-get install$missing); going on without them" >&2
	exit 0
fi
echo "deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing >/dev/null
