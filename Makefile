# fabric: a WireGuard-meshed coordinator/node appliance.
#
#   make build   bin/fabric (admin CLI) and bin/fabricd (daemon)
#   make deb     bin/fabric_<version>_amd64.deb: fabric, fabricd, the systemd
#                unit, the default config, man pages, bash completion
#   make test    every test; the multi-host and package ones need root
#   make test-crash  fabricd killed at every crash point (root)
#   make fuzz    every fuzz target for FUZZTIME (10m) each, one after the other
#   make demo    a local cluster of network-namespace hosts (root)
#   make ha-demo two coordinators on a 3-member etcd, one killed with SIGKILL,
#                changes and transfers through the other, then its restart (root)
#   make bench   benchmarks; ends with one JSON line of figures (root)
#   make bench-scale  a coordinator fabricd and a simulator of 1,000 and
#                10,000 nodes; one JSON line of figures per size (root)
#   make proto   regenerate the committed protobuf code
#   make image   image/out/fabric.img: the bootable VM disk image, from Debian 12
#                packages and make deb's package (root)
#   make vm-test the VM tests: the image booted with qemu (root)
#   make vm-demo a cluster of VMs from the image, activated and checked (root)
#
# test, demo, bench, deb, proto, image, vm-test and vm-demo first install the
# Debian packages they need when run as root (scripts/deps.sh).

GO        ?= go
BIN       := $(CURDIR)/bin
GOFLAGS   ?=
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOBIN_TOOLS := $(CURDIR)/.tools

# The build's version, commit and time, from git (scripts/version.sh); give
# VERSION=... outside a git checkout. The binaries report the first two
# (fabric version, fabricd --version); the .deb takes its version from
# VERSION and every file time from SOURCE_DATE_EPOCH, so the same commit
# gives the same package.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell scripts/version.sh)
endif
ifeq ($(origin COMMIT),undefined)
COMMIT := $(shell git rev-parse HEAD 2>/dev/null)$(if $(findstring -dirty,$(VERSION)),-dirty)
endif
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null)
endif
export SOURCE_DATE_EPOCH
VERSION_PKG := github.com/fabricmesh/fabric/internal/version
LDFLAGS     := -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT)
# -trimpath and -buildvcs=false: the binaries depend on the sources and the
# flags above only, not on where the checkout is or on git's state.
BUILDFLAGS  := -trimpath -buildvcs=false -ldflags '$(LDFLAGS)'
DEB_BIN     := $(BIN)/deb

.PHONY: all build deb test test-crash fuzz demo ha-demo bench bench-scale proto tools lint clean image image-lock vm-test vm-demo

all: build

build:
	$(GO) build $(GOFLAGS) $(BUILDFLAGS) -o $(BIN)/ ./cmd/fabric ./cmd/fabricd ./cmd/fabric-demo ./cmd/fabric-bench ./cmd/fabric-scale
	@# wireguard-go lets the demo and the tests put their admin host on the
	@# VPN with wg-quick, as an operator's machine would join.
	$(GO) build $(GOFLAGS) -o $(BIN)/wireguard-go golang.zx2c4.com/wireguard

# The package's binaries are stripped (-s -w), as Debian ships binaries, and
# linked against libc like every Debian binary; the package depends on the
# libc6 version their symbols need.
deb: deps-deb
	$(GO) build $(GOFLAGS) -trimpath -buildvcs=false -buildmode=pie -ldflags '$(LDFLAGS) -s -w' -o $(DEB_BIN)/ ./cmd/fabric ./cmd/fabricd
	$(GO) run ./packaging/deb --bin-dir $(DEB_BIN) --version $(VERSION) --out-dir $(BIN) >$(DEB_BIN)/last-package
	@cat $(DEB_BIN)/last-package

deps-%:
	@scripts/deps.sh $*

# -p 2: the multi-host packages each build many namespace hosts; running them
# two at a time keeps a small CI machine responsive.
# The package test (packaging/deb) installs the .deb make deb built.
test: deps-test build lint deb
	FABRIC_BIN_DIR=$(BIN) FABRIC_DEB=$$(cat $(DEB_BIN)/last-package) $(GO) test $(GOFLAGS) -race -count=1 -p 2 -timeout 40m ./...

# The whole crash-point matrix (TestCrashPoints; make test runs a subset):
# fabricd killed at every crash point, on the coordinator and on a node,
# during activate and add-nodes. CRASH_RUNS repeats every scenario.
CRASH_RUNS ?= 1
test-crash: deps-test build
	@FABRIC_BIN_DIR=$(BIN) FABRIC_CRASH_MATRIX=full FABRIC_CRASH_RUNS=$(CRASH_RUNS) \
		$(GO) test $(GOFLAGS) -race -count=1 -v -run '^TestCrashPoints$$' -timeout 60m . >$(BIN)/test-crash.log 2>&1; \
	status=$$?; grep -v '^=== ' $(BIN)/test-crash.log; exit $$status

# Every go test -fuzz target for FUZZTIME each (scripts/fuzz.sh; CI runs
# them for 10s). FUZZ_TARGETS picks some, e.g. make fuzz FUZZ_TARGETS=PubAPI.
FUZZTIME ?= 10m
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

demo: deps-demo build
	$(BIN)/fabric-demo --bin-dir $(BIN)

ha-demo: deps-demo build
	$(BIN)/fabric-demo --bin-dir $(BIN) --ha

# BENCH_FLAGS picks a part, e.g. make bench BENCH_FLAGS="--only signed,pastiche --runs 1"
# (scenarios: mesh, inproc, signed, pastiche, vm, flood, failover; see bin/fabric-bench --help).
# vm boots image/out/fabric.img (make image) if it exists, and is skipped
# otherwise.
bench: deps-bench build
	$(BIN)/fabric-bench --bin-dir $(BIN) $(if $(wildcard $(IMAGE)),--image $(IMAGE)) $(BENCH_FLAGS)

# SCALE_FLAGS picks the sizes and more, e.g. make bench-scale SCALE_FLAGS="-n 1000
# --changes 5" (see bin/fabric-scale --help).
bench-scale: deps-bench build
	$(BIN)/fabric-scale --bin-dir $(BIN) $(SCALE_FLAGS)

# The VM image: Debian 12 packages plus make deb's package, built with
# mmdebstrap, reproducibly (docs/image.md). image-lock pins the Debian
# package versions of image/packages.lock anew.
# IMAGE_FLAGS adds build.sh flags, e.g. --allow-lock-drift (CI) or --force.
IMAGE_OUT   := $(CURDIR)/image/out
IMAGE       := $(IMAGE_OUT)/fabric.img
IMAGE_FLAGS ?=
VM_ARGS     ?=

image: deps-image deb
	image/build.sh --deb $$(cat $(DEB_BIN)/last-package) --out $(IMAGE_OUT) $(IMAGE_FLAGS)

image-lock: deps-image deb
	image/build.sh --deb $$(cat $(DEB_BIN)/last-package) --out $(IMAGE_OUT) --update-lock

# The VM tests boot the image with KVM where a Debian kernel runs under it,
# else with TCG (software emulation). make image skips the build when the
# image of image/out has the same inputs. CI runs this: -timeout 30m bounds
# it (about 10 minutes under TCG on 2 cores).
vm-test: deps-vm build image
	FABRIC_BIN_DIR=$(BIN) FABRIC_VM_IMAGE=$(IMAGE) $(GO) test $(GOFLAGS) -count=1 -run '^TestVM' -v -timeout 30m .

# VM_ARGS adds fabric-demo flags, e.g. make vm-demo VM_ARGS="--vms 5".
vm-demo: deps-vm build image
	$(BIN)/fabric-demo --bin-dir $(BIN) --image $(IMAGE) $(VM_ARGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

tools:
	GOBIN=$(GOBIN_TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: deps-proto tools
	PATH=$(GOBIN_TOOLS):$$PATH protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		pubapi/pubapipb/pubapi.proto vpnapi/vpnapipb/vpnapi.proto node/reeve/reevepb/reeve.proto \
		node/pastiche/pastichepb/pastiche.proto

clean:
	rm -rf $(BIN) $(GOBIN_TOOLS)
