#!/bin/sh
# Prints the version of the checkout: `git describe` of the last v* tag
# (v0.1.0, v0.1.0-3-g1a2b3c4), or v0.0.0-<commits>-g<hash> before the first
# tag; -dirty marks uncommitted changes to tracked files.
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "not a git checkout: give the version, e.g. make deb VERSION=v0.1.0" >&2
	exit 1
fi
if git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null; then
	exit 0
fi
dirty=
git update-index -q --refresh >/dev/null 2>&1 || true
git diff-index --quiet HEAD -- || dirty=-dirty
echo "v0.0.0-$(git rev-list --count HEAD)-g$(git rev-parse --short=7 HEAD)$dirty"
