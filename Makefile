# Fast Sandbox. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

MODULE     := github.com/fast-sandbox/fast-sandbox
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -s -w -X $(MODULE)/pkg/version.Version=$(VERSION) -X $(MODULE)/pkg/version.Commit=$(COMMIT)
BUF_VERSION := v1.75.0
CONTROLLER_GEN_VERSION := v0.23.0
TOOLS      := $(CURDIR)/bin/tools
# Packages and flags `make test` hands to go test; override to narrow a run.
PKGS       ?= ./...
TESTFLAGS  ?= -race -count=1 -timeout 20m

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the static bin/fsb and bin/fsb-helper
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/fsb .
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -tags fsbhelper -o bin/fsb-helper .

.PHONY: tools
tools: ## build buf, the protoc plugins and controller-gen at pinned versions into bin/tools
	@mkdir -p $(TOOLS)
	@[ -x $(TOOLS)/buf ] && $(TOOLS)/buf --version 2>/dev/null | grep -qx '$(BUF_VERSION:v%=%)' || \
		GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@[ -x $(TOOLS)/controller-gen ] && $(TOOLS)/controller-gen --version 2>/dev/null | grep -qx 'Version: $(CONTROLLER_GEN_VERSION)' || \
		GOBIN=$(TOOLS) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	go build -o $(TOOLS)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	go build -o $(TOOLS)/protoc-gen-connect-go connectrpc.com/connect/cmd/protoc-gen-connect-go

.PHONY: generate
generate: tools ## regenerate pkg/gen from proto/ (buf with local plugins), the API types' deepcopy and the CRDs in deploy/crds
	$(TOOLS)/buf lint
	$(TOOLS)/buf generate
	$(TOOLS)/controller-gen object paths=./pkg/api/...
	$(TOOLS)/controller-gen crd paths=./pkg/api/... output:crd:artifacts:config=deploy/crds

.PHONY: check-generated
check-generated: generate ## fail when the committed generated code is stale
	@if [ -n "$$(git status --porcelain -- pkg/gen pkg/api deploy/crds)" ]; then \
		echo "generated code is stale: run 'make generate' and commit pkg/gen, pkg/api and deploy/crds:"; \
		git status --porcelain -- pkg/gen pkg/api deploy/crds; git --no-pager diff --stat -- pkg/gen pkg/api deploy/crds; exit 1; fi

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go vet -tags fsbhelper .

.PHONY: test
test: build check-generated lint ## build, check generated code, lint, and run every test on a real rig
	scripts/test.sh $(TESTFLAGS) $(PKGS)

.PHONY: test-e2b
test-e2b: build ## run E2B's JavaScript SDK (test/e2b) against an agent and a controller on a rig, printing node's output and the create -> run latency
	scripts/test.sh -count=1 -timeout 20m -v -run TestSDK ./test/e2b/

.PHONY: chaos
chaos: build ## fuzz every Fuzz target for FUZZTIME each (default 60s), then the long fault suite and churn test (FSB_CHAOS=1)
	scripts/chaos.sh

.PHONY: bench
bench: build ## agent create/delete latency for runc and crun beside raw containerd
	scripts/test.sh -run '^$$' -bench AgentVsContainerd -benchtime 25x -count 1 ./pkg/agent/

# Where `make rig-up` keeps a rig for working by hand; socket paths must
# stay short.
RIG_DIR ?= /tmp/fsb-rig.dev

# Where `make rig-up` keeps the etcd and API server beside it.
KUBE_RIG_DIR ?= /tmp/fsb-kube.dev

.PHONY: rig-up
rig-up: build ## start a rig (containerd, etcd, API server) in $(RIG_DIR) for go test by hand (then: source $(RIG_DIR)/env)
	scripts/rig.sh up $(RIG_DIR)
	scripts/kube.sh build >/dev/null
	scripts/kube.sh start $(KUBE_RIG_DIR)/shared
	@echo 'export FSB_BINARY=$(CURDIR)/bin/fsb FSB_HELPER_BINARY=$(CURDIR)/bin/fsb-helper' >> $(RIG_DIR)/env
	@cat $(KUBE_RIG_DIR)/shared/env >> $(RIG_DIR)/env
	@echo 'export FSB_KUBE_RUN_DIR=$(KUBE_RIG_DIR)' >> $(RIG_DIR)/env

.PHONY: rig-down
rig-down: ## stop the rig in $(RIG_DIR)
	for d in $(KUBE_RIG_DIR)/*/; do [ ! -d "$$d" ] || scripts/kube.sh stop "$$d"; done
	rmdir $(KUBE_RIG_DIR) 2>/dev/null || true
	scripts/rig.sh down $(RIG_DIR)

# KUBE=1 runs make up and make demo on a local etcd and Kubernetes API
# server, with the controller's kube store (see docs/kubernetes.md).
KUBE ?=

.PHONY: up
up: build ## start containerd, an agent and a controller (E2B's API on 127.0.0.1:9094 too) in the background (then: source .fsb/env); KUBE=1: on a local API server
	KUBE='$(KUBE)' scripts/up.sh

.PHONY: down
down: ## stop what make up started and remove .fsb/
	scripts/down.sh

# down runs whatever happens; `|| rc=$$?` keeps the shell's -e from leaving
# before it.
.PHONY: demo
demo: build ## the quick start: make up, a sandbox and its logs, make down; KUBE=1: on a local API server
	rc=0; KUBE='$(KUBE)' scripts/up.sh && scripts/demo.sh || rc=$$?; scripts/down.sh; exit $$rc

# Where `make cluster-up` keeps its cluster (scripts/cluster.sh), and the
# overlay it applies.
CLUSTER_DIR     := $(CURDIR)/.fsb/cluster
CLUSTER_OVERLAY ?= deploy/overlays/local

.PHONY: cluster-up
cluster-up: build ## start a real single-node cluster in its own network namespace and apply deploy/ (then: source .fsb/env)
	@if [ -e .fsb/env ] && [ ! -e $(CLUSTER_DIR) ]; then echo "make up is running (.fsb/env): run make down first"; exit 1; fi
	kube_bin=$$(scripts/kube.sh build); \
	FSB_KUBE_BIN=$$kube_bin scripts/cluster.sh up $(CLUSTER_DIR) --overlay $(CLUSTER_OVERLAY); \
	rm -f .fsb/env.tmp; (umask 077 && : > .fsb/env.tmp); \
	{ echo "# Written by make cluster-up; source it to use the cluster and its controller."; \
	  sed '/^#/d' $(CLUSTER_DIR)/env; \
	  printf 'export PATH=%q:"$$PATH"\n' "$$kube_bin"; } > .fsb/env.tmp; \
	mv -f .fsb/env.tmp .fsb/env
	@echo "cluster up: source .fsb/env, then fsb ctl list or kubectl get pods -n fsb-system"

.PHONY: cluster-down
cluster-down: ## stop what make cluster-up started: daemons, pods, network namespace, mounts, .fsb/
	scripts/cluster.sh down $(CLUSTER_DIR)
	rm -f .fsb/env
	rmdir .fsb 2>/dev/null || true

.PHONY: clean
clean: ## remove build output
	rm -rf bin
