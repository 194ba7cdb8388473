# fabric: a WireGuard-meshed coordinator/node appliance.
#
#   make build   bin/fabric (admin CLI) and bin/fabricd (daemon)
#   make test    every test; the multi-host ones need root
#   make demo    a local cluster of network-namespace hosts (root)
#   make bench   benchmarks; ends with one JSON line of figures (root)
#   make proto   regenerate the committed protobuf code

GO        ?= go
BIN       := $(CURDIR)/bin
GOFLAGS   ?=
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOBIN_TOOLS := $(CURDIR)/.tools

.PHONY: all build test demo bench proto tools lint clean

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/fabric ./cmd/fabricd ./cmd/fabric-demo ./cmd/fabric-bench
	@# wireguard-go lets the demo and the tests put their admin host on the
	@# VPN with wg-quick, as an operator's machine would join.
	$(GO) build $(GOFLAGS) -o $(BIN)/wireguard-go golang.zx2c4.com/wireguard

# -p 2: the multi-host packages each build many namespace hosts; running them
# two at a time keeps a small CI machine responsive.
test: build lint
	FABRIC_BIN_DIR=$(BIN) $(GO) test $(GOFLAGS) -race -count=1 -p 2 -timeout 40m ./...

demo: build
	$(BIN)/fabric-demo --bin-dir $(BIN)

# BENCH_FLAGS picks a part, e.g. make bench BENCH_FLAGS="--only signed,pastiche --runs 1"
# (scenarios: mesh, inproc, signed, pastiche; see bin/fabric-bench --help).
bench: build
	$(BIN)/fabric-bench --bin-dir $(BIN) $(BENCH_FLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

tools:
	GOBIN=$(GOBIN_TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: tools
	PATH=$(GOBIN_TOOLS):$$PATH protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		pubapi/pubapipb/pubapi.proto vpnapi/vpnapipb/vpnapi.proto node/reeve/reevepb/reeve.proto \
		node/pastiche/pastichepb/pastiche.proto

clean:
	rm -rf $(BIN) $(GOBIN_TOOLS)
