# mcpid build. `make help` lists the targets.
#
# Go 1.26.8 on these machines has standard-library vulnerabilities fixed in
# go1.26.10: the go command fetches that toolchain through the module proxy.
export GOTOOLCHAIN := go1.26.10
export GOFLAGS := -buildvcs=false

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(CURDIR)/node_modules/.bin:$(PATH)

# Pinned tool versions. buf is pinned in package-lock.json (npm @bufbuild/buf).
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION       := v2.33.0
GOLANGCI_LINT_VERSION      := v2.15.0

# Every Go module of the workspace. `go test ./...` at the go.work root does
# not reach nested modules, so each is listed here.
MODULES      := gen lib services/registration services/token services/policy services/audit cmd/mcpid sdk/mcpguard examples/crm test/e2e deploy
# Modules whose tests run with the race detector.
RACE_MODULES := lib services/registration services/token services/policy services/audit cmd/mcpid sdk/mcpguard examples/crm test/e2e
SERVICES     := registration token policy audit

FILTER ?=
TEST_FLAGS ?= -count=1 -timeout 15m
RUN_FILTER := $(if $(FILTER),-run '$(FILTER)',)

##@ Everyday

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

.PHONY: run
run: build ## Run the whole system on one machine (`mcpid dev`, embedded etcd).
	$(BIN)/mcpid dev

.PHONY: test
test: deps ## Run every module's tests (race detector on lib, services and cmd). FILTER=regexp narrows.
	@for m in $(MODULES); do \
	  race=""; for r in $(RACE_MODULES); do [ "$$r" = "$$m" ] && race="-race"; done; \
	  echo ">> go test $$race $$m"; \
	  (cd $$m && go test $$race $(TEST_FLAGS) $(RUN_FILTER) ./...) || exit 1; \
	done

.PHONY: build
build: ## Build a binary per service and the mcpid CLI into ./bin (GOWORK=off, as container builds do).
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do \
	  echo ">> build bin/mcpid-$$s"; \
	  (cd services/$$s && GOWORK=off go build -o $(BIN)/mcpid-$$s .) || exit 1; \
	done
	@echo ">> build bin/mcpid"
	@cd cmd/mcpid && GOWORK=off go build -o $(BIN)/mcpid .

.PHONY: bench
bench: ## Run the benchmarks of every module (no tests).
	@for m in $(MODULES); do \
	  echo ">> go test -bench $$m"; \
	  (cd $$m && go test -run '^$$' -bench '$(or $(FILTER),.)' -benchmem ./...) || exit 1; \
	done

##@ Contracts

.PHONY: generate
generate: tools ## Regenerate gen/ (Go, gateway, OpenAPI) from proto/ with local plugins.
	rm -rf gen/go/mcpid gen/openapiv2
	buf generate
	cd gen && go mod tidy

.PHONY: check-generate
check-generate: generate ## Fail when regeneration changes anything in gen/.
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ is not what 'make generate' produces:"; git status --porcelain -- gen; git diff --stat -- gen; exit 1; \
	fi
	@echo "gen/ is up to date"

.PHONY: breaking
breaking: tools ## Check proto changes against the newest proto/v* release tag (none yet: skipped with a message).
	@tag=$$(git tag --list 'proto/v*' --sort=-v:refname | head -n1); \
	if [ -z "$$tag" ]; then echo "no proto/v* tag yet: nothing released to guard"; \
	else echo ">> buf breaking against $$tag"; buf breaking --against ".git#tag=$$tag"; fi

##@ Quality

.PHONY: lint
lint: tools ## buf lint, go vet and golangci-lint on every module.
	buf lint
	@for m in $(MODULES); do \
	  echo ">> vet + golangci-lint $$m"; \
	  (cd $$m && go vet ./... && golangci-lint run --allow-parallel-runners ./...) || exit 1; \
	done

.PHONY: tidy
tidy: ## go mod tidy every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done

.PHONY: check-tidy
check-tidy: tidy ## Fail when go mod tidy changes any go.mod or go.sum.
	@if [ -n "$$(git status --porcelain -- '*go.mod' '*go.sum')" ]; then \
	  echo "go mod tidy changed:"; git status --porcelain -- '*go.mod' '*go.sum'; exit 1; \
	fi
	@echo "go.mod files are tidy"

##@ Tools

# Debian packages the tests need: headless Chromium drives the login and
# consent pages in end-to-end tests. Installed only when missing.
.PHONY: deps
deps: ## Install the Debian packages tests need (chromium) when missing.
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo ">> installing Debian package chromium"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

.PHONY: tools
tools: node_modules/.bin/buf \
	$(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) \
	$(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION) \
	$(BIN)/.grpc-gateway-$(GRPC_GATEWAY_VERSION) \
	$(BIN)/.golangci-lint-$(GOLANGCI_LINT_VERSION) ## Install pinned tools into ./bin and node_modules.

node_modules/.bin/buf: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

$(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@

$(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

$(BIN)/.grpc-gateway-$(GRPC_GATEWAY_VERSION):
	GOBIN=$(BIN) go install \
	  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION) \
	  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
	@touch $@

$(BIN)/.golangci-lint-$(GOLANGCI_LINT_VERSION):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@touch $@

##@ Packaging

# Images are built without a container engine (deploy/cmd/mkimage, with
# go-containerregistry pinned in deploy/go.mod): a base of Debian's CA bundle
# and a passwd entry for the numeric non-root user, plus the static binary.
# Output: bin/images/mcpid-<service>.oci.tar (OCI image layout), loadable
# with `skopeo copy oci-archive:...`, `docker load` or `crane push`.
IMAGES_DIR    := $(BIN)/images
IMAGE_VERSION ?= dev
IMAGE_UID     ?= 65532
CA_BUNDLE     ?= /etc/ssl/certs/ca-certificates.crt
PORTS_registration := 7001,7101
PORTS_token        := 7002,7102
PORTS_policy       := 7003,7103
PORTS_audit        := 7004,7104

.PHONY: images
images: ## Build the four service images as OCI tars in bin/images (no Docker engine) and start each as its user.
	@if [ ! -f $(CA_BUNDLE) ]; then \
	  echo ">> installing Debian package ca-certificates"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ca-certificates; \
	fi
	@mkdir -p $(IMAGES_DIR)/bin $(BIN)
	@cd deploy && GOWORK=off go build -o $(BIN)/mkimage ./cmd/mkimage
	@for s in $(SERVICES); do \
	  echo ">> image mcpid-$$s"; \
	  (cd services/$$s && CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags='-s -w' -o $(IMAGES_DIR)/bin/mcpid-$$s .) || exit 1; \
	  ports=$$(case $$s in registration) echo $(PORTS_registration);; token) echo $(PORTS_token);; policy) echo $(PORTS_policy);; audit) echo $(PORTS_audit);; esac); \
	  grpc=$${ports%%,*}; http=$${ports##*,}; \
	  $(BIN)/mkimage -name $$s -binary $(IMAGES_DIR)/bin/mcpid-$$s -ca-bundle $(CA_BUNDLE) -uid $(IMAGE_UID) \
	    -ports $$ports -env MCPID_GRPC_ADDR=:$$grpc,MCPID_HTTP_ADDR=:$$http \
	    -version $(IMAGE_VERSION) -out $(IMAGES_DIR)/mcpid-$$s.oci.tar || exit 1; \
	done
	@echo ">> verify: each image's binary, chrooted into its root filesystem as uid $(IMAGE_UID), must find its CA bundle"
	@$(BIN)/mkimage verify $(foreach s,$(SERVICES),$(IMAGES_DIR)/mcpid-$(s).oci.tar)

.PHONY: chart
chart: ## Render the Helm chart with default and example values and decode every object strictly (deploy module tests).
	@cd deploy && go test -count=1 ./chart/...

##@ Cluster

# The scale-out and fault harness (test/cluster, kept out of MODULES so that
# `make test` does not run it): the service binaries and an etcd member
# helper, 3 etcd members and 2 replicas of each service as processes on
# loopback, load while the etcd leader and one replica of each service are
# killed. Prints its figures (docs/BENCHMARKS.md keeps a run's).
CLUSTER_FIGURES ?= $(BIN)/cluster-figures.txt

.PHONY: test-cluster
test-cluster: build ## Run the cluster harness: 3 etcd members, 2 replicas per service, leader and replica kills under load.
	@cd test/cluster && GOWORK=off go build -o $(BIN)/etcdmember ./cmd/etcdmember
	@echo ">> vet + golangci-lint test/cluster"
	@cd test/cluster && go vet ./... && golangci-lint run --allow-parallel-runners ./...
	@echo ">> go test test/cluster"
	@cd test/cluster && MCPID_BIN=$(BIN) CLUSTER_FIGURES=$(CLUSTER_FIGURES) go test -count=1 -timeout 4m -v -run TestClusterScaleOutAndFaults ./... 2>&1 | grep -v '^=== ' ; \
	  status=$${PIPESTATUS[0]}; [ -f $(CLUSTER_FIGURES) ] && cat $(CLUSTER_FIGURES); exit $$status
