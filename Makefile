# lockmigrate: see `make help`.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Extra arguments for go test, e.g. make test TESTARGS='-run TestLock -v'
TESTARGS ?=

.DEFAULT_GOAL := help
.PHONY: help demo test build vet fmt clean bench

help:
	@echo 'Targets:'
	@echo '  make demo    8 replicas race against a throwaway PostgreSQL 15 (scripts/demo.sh)'
	@echo '  make test    gofmt, go vet and go test -race (scripts/test.sh; TESTARGS=... for go test; CLUSTER_TEST=0 skips the cluster tests)'
	@echo '  make bench   lockmigrate vs a floor and goose/golang-migrate/tern on a throwaway PostgreSQL 15 (bench/run.sh; writes bench/RESULTS.md)'
	@echo '  make build   build bin/lockmigrate (pure Go) and its lint parser bin/lockmigrate-pgparse (static cgo), VERSION=$(VERSION)'
	@echo '  make vet     go vet ./...'
	@echo '  make fmt     gofmt -w the Go files'
	@echo '  make clean   remove bin/'

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh $(TESTARGS)

# lockmigrate is pure Go; lint's parser (libpg_query, C) is the static cgo
# helper it starts from next to itself, only when it lints (docs/lint.md).
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/lockmigrate .
	CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo -ldflags "-s -w -linkmode external -extldflags -static" -o bin/lockmigrate-pgparse ./cmd/lockmigrate-pgparse

vet:
	go vet ./...

fmt:
	gofmt -l -w .

clean:
	rm -rf bin

bench:
	bash bench/run.sh
