# Nydus-Go build, test and benchmark entry points.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/nydus-go/nydus/internal/version.GitCommit=$(GIT_COMMIT)
FUZZTIME ?= 10s

.PHONY: all build deps test unit lint fuzz interop e2e image demo demo-builder bench bench-images bench-build bench-convert bench-fs bench-nodes bench-smoke snapshotter stargz soci clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Debian packages the tests, the demo and the benchmarks need (CI runs as
# root): the registry, containerd with runc and ctr-remote (package
# stargz-snapshotter), what builds the Debian test image, ClamAV (the
# reference event subscriber, examples/scanner), squid (a forward proxy,
# as Dragonfly's dfdaemon is), nginx (a slice cache, for bench-nodes) and
# zlib's static library (SOCI's zTOC code links it through cgo, make soci).
APT_PACKAGES := zstd erofs-utils debootstrap umoci skopeo docker-registry containerd runc stargz-snapshotter curl clamav squid nginx-light zlib1g-dev
# staticcheck, pinned, from the Go module proxy (make lint runs it on
# every module of the repository).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    $(APT_PACKAGES) >/dev/null; \
	fi
	$(GO) mod download
	$(GO) run $(STATICCHECK) -version >/dev/null

lint:
	@out=$$(gofmt -l cmd pkg internal test tools bench examples 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test/interop && $(GO) vet -tags e2e ./...
	cd bench/startup && $(GO) vet ./...
	cd tools/stargz && $(GO) vet ./...
	cd tools/soci && $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd test/interop && $(GO) run $(STATICCHECK) -tags e2e ./...
	cd bench/startup && $(GO) run $(STATICCHECK) ./...
	cd tools/stargz && $(GO) run $(STATICCHECK) ./...
	cd tools/soci && $(GO) run $(STATICCHECK) ./...
	@# go.mod files must be tidy (the interop module follows the main one).
	$(GO) mod tidy -diff
	cd test/interop && $(GO) mod tidy -diff
	cd bench/startup && $(GO) mod tidy -diff
	cd tools/stargz && $(GO) mod tidy -diff
	cd tools/soci && $(GO) mod tidy -diff

unit: build
	NYDUS_IMAGE=$(BIN)/nydus-image $(GO) test -count=1 ./...
	$(GO) test -race -short -count=1 ./pkg/...
	cd bench/startup && $(GO) test -count=1 ./...

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

interop: build
	cd test/interop && NYDUS_IMAGE=$(BIN)/nydus-image NYDUSD=$(BIN)/nydusd $(GO) test -count=1 ./...

# A debootstrapped Debian bookworm image (minbase, and minbase + curl) as
# an OCI layout, built once and cached in IMAGE_DIR (needs root).
IMAGE_DIR ?= /var/tmp/nydus-images
image:
	./scripts/debian-image.sh $(IMAGE_DIR) >/dev/null

# End to end under containerd: Debian's containerd and docker-registry,
# upstream nydus-snapshotter and our nydusd (needs root).
e2e: deps build snapshotter image
	cd test/interop && NYDUSD=$(BIN)/nydusd NYDUSIFY=$(BIN)/nydusify NYDUS_IMAGE=$(BIN)/nydus-image \
	  SNAPSHOTTER=$(BIN)/containerd-nydus-grpc E2E_IMAGE=$(IMAGE_DIR)/debian \
	  $(GO) test -tags e2e -count=1 -timeout 20m -v ./e2e/

# The README's test command: everything CI runs.
test: deps lint unit fuzz interop e2e bench-smoke demo-builder demo

# bench-nodes on 1 and 4 nodes: CI runs the benchmark's machinery (the
# caches, the concurrent daemons); its figures come from make bench-nodes.
bench-smoke: build image
	./scripts/debian-image.sh $(IMAGE_DIR) python >/dev/null
	BENCH_NODES=1,4 $(GO) test ./cmd/nydusd -run '^$$' -bench 'Benchmark(Nodes|Share)$$' -benchtime 1x -timeout 10m

# The README's main job: run a Debian container lazily from a Nydus-Go
# image under containerd with upstream nydus-snapshotter and our nydusd.
demo: deps build snapshotter
	./scripts/demo.sh

# The builder's part on its own (no root needed): build, merge, check,
# inspect and unpack an image made from this repository's sources.
demo-builder: build
	./scripts/demo-builder.sh

bench-build: build
	$(GO) run ./bench/build -go '$(GO)'

bench-convert: build
	$(GO) run ./bench/convert

# nydusd figures (warm passthrough read, metadata walk, cold registry
# read, shared-daemon RSS) against native ext4 in one run; needs root.
bench-fs: deps image
	$(GO) test ./cmd/nydusd -run '^$$' -bench BenchmarkFS -benchtime 1x -timeout 30m

# Many nodes on one machine: N nydusd daemons (1, 4, 16; BENCH_NODES=)
# with their own caches start the Debian curl image at once, from the
# origin registry, then through a slice cache (nginx) and a registry
# pull-through mirror; the origin's egress and the start times. Then two
# images converted on their own in one shared nydusd: what the second
# fetches against what the first's cache lacks (BenchmarkShare). Needs
# root.
bench-nodes: deps build image bench-images
	$(GO) test ./cmd/nydusd -run '^$$' -bench 'Benchmark(Nodes|Share)$$' -benchtime 1x -timeout 30m

# The upstream nydus-snapshotter that drives our nydusd under containerd,
# pinned in tools/snapshotter (go install refuses the module: its go.mod
# has exclude directives). About 2 minutes on 2 cores.
SNAPSHOTTER_VERSION := v0.16.1
snapshotter:
	@mkdir -p $(BIN)
	cd tools/snapshotter && $(GO) build -trimpath \
		-ldflags '-X github.com/containerd/nydus-snapshotter/version.Version=$(SNAPSHOTTER_VERSION)' \
		-o $(BIN)/containerd-nydus-grpc github.com/containerd/nydus-snapshotter/cmd/containerd-nydus-grpc

# A minimal stargz-snapshotter daemon (the benchmark's eStargz system),
# from the root module of stargz-snapshotter v0.19.1 (tools/stargz).
stargz:
	@mkdir -p $(BIN)
	cd tools/stargz && $(GO) build -trimpath -o $(BIN)/containerd-stargz-grpc .

# The SOCI peer, from the root module of soci-snapshotter v0.16.1
# (tools/soci; its cmd module is not on the Go module proxy): a minimal
# snapshotter daemon on its service package, and a small soci CLI on its
# soci package: `soci convert` makes an image in a registry SOCI-enabled
# (zTOCs + a SOCI index v2) and pushes it, `soci rpull` pulls it with the
# labels the snapshotter reads (ctr-remote's rpull sets stargz's only).
# The zTOC code needs cgo and zlib's static library (zlib1g-dev, make deps).
soci:
	@mkdir -p $(BIN)
	cd tools/soci && CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/soci-snapshotter-grpc ./snapshotter
	cd tools/soci && CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/soci ./cli

# Container startup benchmark (bench/startup): cold pull + run of
# HelloBench-style workloads as OCI on overlayfs, eStargz on
# stargz-snapshotter and Nydus-Go on nydus-snapshotter, and by reference
# to the OCI image's layers (a SOCI index on the SOCI snapshotter, a
# Nydus-Go zran image on nydus-snapshotter), unlimited and
# constrained network; rewrites its section of docs/benchmarks.md and
# docs/bench-startup.png. QUICK=1: two workloads, images converted at
# the same time, no filesystem-level figures (under 10 minutes on a fresh
# machine); the full profile adds BenchmarkFS's warm read and walk.
# WORKLOADS=FILE runs your own workloads instead (a JSON list of
# {"name", "packages", "argv", "want"}; each image is minbase plus a
# layer with its Debian packages, built once). Needs root.
QUICK ?=
WORKLOADS ?=
BENCH_RUNS ?= 3
BENCH_OUT ?= /tmp/nydus-bench-startup
bench: deps
	$(MAKE) -j3 build snapshotter stargz soci bench-images QUICK=$(QUICK)
	rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	$(if $(QUICK),,BENCH_FS_RUNS=3 $(GO) test ./cmd/nydusd -count=1 -run '^$$' -bench 'BenchmarkFS/(warm|walk)$$' \
	  -benchtime 1x -timeout 20m > $(BENCH_OUT)/fs.txt || { cat $(BENCH_OUT)/fs.txt; exit 1; })
	cd bench/startup && $(GO) run . -bin $(BIN) -layout $(IMAGE_DIR)/debian -runs $(BENCH_RUNS) -out $(BENCH_OUT) \
	  $(if $(QUICK),-quick,-fs $(BENCH_OUT)/fs.txt) $(if $(WORKLOADS),-workloads $(abspath $(WORKLOADS)) -images $(CURDIR)/scripts/debian-image.sh) \
	  -doc $(CURDIR)/docs/benchmarks.md -chart $(CURDIR)/docs/bench-startup.png

bench-images:
	./scripts/debian-image.sh $(IMAGE_DIR) $(if $(QUICK),,python gcc) >/dev/null

clean:
	rm -rf $(BIN)
