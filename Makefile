# rbee — see README.md. `make run` starts a local cluster; `make test` runs every test.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: all build run test test-short vet fuzz bench clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rbee ./cmd/rbee
	@if [ -d cmd/rbee-worker ]; then $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/rbee-worker ./cmd/rbee-worker; fi

# A local 3-node cluster on loopback; Ctrl-C stops it.
run: build
	./bin/rbee dev

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

# Every test: unit, in-process cluster, multi-process end-to-end, with the
# race detector (which needs cgo).
test: vet
	CGO_ENABLED=1 $(GO) test -race -timeout 45m -count=1 ./...

test-short:
	$(GO) test -short -count=1 ./...

# Run each fuzz target for a short while (the corpus lives in testdata/fuzz).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean:
	rm -rf bin
