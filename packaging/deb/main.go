// Command deb builds fabric's Debian package, bin/fabric_<version>_amd64.deb,
// from binaries built by `make deb`: fabric, fabricd, the hardened systemd
// unit (files/fabricd.service), the commented default config (made from
// internal/fabricdconfig's key table), man pages and bash completion
// (generated from the CLI's cobra commands and fabricd's flags), the
// copyright file and a Debian changelog.
//
// It uses nfpm as a library, so no Debian tooling is needed to build. It is
// a build tool, not a product: it lives under packaging/ rather than cmd/,
// beside the package's static files, and the VM image build (image/)
// installs what it makes.
//
// Every file of the package gets the time SOURCE_DATE_EPOCH, man pages and
// the changelog are compressed without names or times, and the binaries are
// built with -trimpath and -buildvcs=false, so the same commit gives the
// same .deb, byte for byte.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
