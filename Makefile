# Baton's front door. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := $(CURDIR)/bin
MODULES := ./proto/... ./settings/... ./status/... ./broker/... ./worker/... ./tests/...
# Generators are pinned in tools/go.mod and run outside the workspace.
TOOL := GOWORK=off go tool -modfile=$(CURDIR)/tools/go.mod
TEST_TIMEOUT ?= 20m

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z_-]*:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: $(if $(wildcard workers/node/node_modules),build-node) ## Build bin/broker and bin/worker (and the Node worker, workers/node/dist, once its npm ci ran)
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/broker ./broker/cmd/broker
	@if ls worker/cmd/worker/*.go >/dev/null 2>&1; then go build -ldflags "$(LDFLAGS)" -o $(BIN)/worker ./worker/cmd/worker; fi
	@[ -d workers/node/node_modules ] || echo "workers/node: no node_modules (cd workers/node && npm ci): the Node worker is not built"

# The Node worker's modules come from its committed package-lock.json.
NODE_WORKER := workers/node
NODE_MODULES_HINT := run 'cd $(NODE_WORKER) && npm ci' first

.PHONY: build-node
build-node: ## Build the Node worker (workers/node/dist; needs npm ci there)
	@[ -d $(NODE_WORKER)/node_modules ] || { echo "$(NODE_WORKER): no node_modules: $(NODE_MODULES_HINT)"; exit 1; }
	cd $(NODE_WORKER) && npm run --silent build

.PHONY: run
run: build ## Run broker + worker against DATABASE_URL, or a throwaway local PostgreSQL; Ctrl-C stops
	go build -o $(BIN)/devrun ./tests/cmd/devrun
	$(BIN)/devrun -bin $(BIN)

.PHONY: run-pair
run-pair: build ## Run two broker + worker pairs on one database, to try a handoff
	go build -o $(BIN)/devrun ./tests/cmd/devrun
	$(BIN)/devrun -bin $(BIN) -pairs 2

.PHONY: test
test: ## Run every test (unit, end-to-end and fault tests against a real PostgreSQL; the alert rules and dashboard; the conformance kit against every worker)
	go test -count=1 -timeout $(TEST_TIMEOUT) $(MODULES)
	BATON_TEST_OPEN_FILES=1 go test -count=1 ./worker/internal/storage/ ./worker/internal/shapes/
	cd deploy/monitoring && GOWORK=off go test -count=1 ./...
	$(MAKE) --no-print-directory conformance-all

# `make conformance WORKER="<command>"`: the conformance kit (tests/conformance)
# against any worker; WORKER2="<command>" runs another worker as the second pod
# of the stream (handoffs both ways between the two). The commands run with
# sh -c and read the environment contract (README: "Writing a worker in
# another language"); make passes WORKER and WORKER2 on in the environment.
.PHONY: conformance
conformance: build ## Check a worker against the lease contract: make conformance WORKER="<command>" [WORKER2="<command>"]
	go build -o $(BIN)/conformance ./tests/cmd/conformance
	$(BIN)/conformance -broker $(BIN)/broker

# Every worker of the repository, as `make test` checks them: one line each
# (-worker2 for a pair of different workers).
.PHONY: conformance-all
conformance-all: build build-node
	go build -o $(BIN)/conformance ./tests/cmd/conformance
	$(BIN)/conformance -broker $(BIN)/broker -worker '$(BIN)/worker'
	$(BIN)/conformance -broker $(BIN)/broker -worker '$(NODE_WORKER_CMD)'
	$(BIN)/conformance -broker $(BIN)/broker -worker '$(BIN)/worker' -worker2 '$(NODE_WORKER_PAIRED_CMD)'

# The Node worker as the kit runs it: its output file where both pods see it,
# publishing the kit's table.
NODE_WORKER_CMD := BATON_OUTPUT_FILE=$$BATON_DELIVERY_FILE BATON_TABLES=public.baton_conformance exec node $(CURDIR)/$(NODE_WORKER)/dist/main.js
# Paired with the Go worker, which delivers nothing to the kit's file, the
# Node worker writes its own file: the kit's delivered-exactly-once would
# count the rows the Go worker consumed as lost (it says SKIP instead).
NODE_WORKER_PAIRED_CMD := BATON_OUTPUT_FILE=$$BATON_SHARED_DIR/changes.jsonl BATON_TABLES=public.baton_conformance exec node $(CURDIR)/$(NODE_WORKER)/dist/main.js

# `make faults`: the randomized fault test, long. Each storage mode (per-pod
# and shared) takes FAULT_COUNT faults; FAULT_SEED replays a run's draws.
FAULT_COUNT ?= 200
FAULT_SEED ?=
FAULT_TIMEOUT ?= 120m

.PHONY: faults
faults: ## Run the randomized fault test long (FAULT_COUNT=200 faults per storage mode, FAULT_SEED=n to replay)
	BATON_FAULT_COUNT=$(FAULT_COUNT) BATON_FAULT_SEED=$(FAULT_SEED) \
		go test -count=1 -v -timeout $(FAULT_TIMEOUT) -run '^TestRandomFaults$$' ./tests/e2e/

.PHONY: bench
bench: build ## Run the benchmarks and print them next to their baselines
	go run ./tests/cmd/bench -bin $(BIN)

.PHONY: generate
generate: ## Regenerate proto/*.pb.go and workers/node/src/gen from proto/baton/v1/*.proto (no network)
	cd proto && $(TOOL) buf generate
	@[ -d $(NODE_WORKER)/node_modules ] || { echo "$(NODE_WORKER): no node_modules: $(NODE_MODULES_HINT)"; exit 1; }
	cd proto && $(TOOL) buf generate --template buf.gen.node.yaml

.PHONY: checkgenerate
checkgenerate: generate ## Fail if the committed generated code differs from a fresh generation
	@if [ -n "$$(git status --porcelain -- proto $(NODE_WORKER)/src/gen)" ]; then \
		git status --porcelain -- proto $(NODE_WORKER)/src/gen; git diff -- proto $(NODE_WORKER)/src/gen | head -50; \
		echo "generated code is stale: run 'make generate' and commit"; exit 1; fi

.PHONY: lint
lint: breaking ## gofmt, go vet, buf lint and buf breaking
	@out=$$(gofmt -l proto settings status broker worker tests deploy/monitoring); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(MODULES)
	cd proto && $(TOOL) buf lint

.PHONY: breaking
breaking: ## Fail if lease.proto breaks the last released one (proto/released; no network)
	cd proto && $(TOOL) buf breaking --against released

# The manifests (deploy/kubernetes/base/kustomization.yaml, images:) name
# baton-broker:dev and baton-worker:dev; tests/manifests checks they agree.
IMAGE_TAG ?= dev

.PHONY: images
images: ## Build images baton-broker and baton-worker, tagged IMAGE_TAG (default dev; needs a Docker engine)
	docker build -f deploy/broker.Dockerfile -t baton-broker:$(IMAGE_TAG) --build-arg VERSION=$(VERSION) .
	docker build -f deploy/worker.Dockerfile -t baton-worker:$(IMAGE_TAG) --build-arg VERSION=$(VERSION) .

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
