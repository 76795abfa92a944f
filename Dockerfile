# syntax=docker/dockerfile:1
#
# lockmigrate container image: two static binaries on an empty (scratch)
# base, running as the unprivileged user 65532. No shell, no package manager.
#
#   docker build -t lockmigrate .
#   docker run --rm -e DATABASE_URL=postgres://app@db:5432/app lockmigrate
#
# Baking your own migrations (the usual way to use this image): keep your
# *.sql files in a directory of the build context and name it in MIGRATIONS.
# Its top-level *.sql files replace the example set embedded from
# migrations/, so the image carries exactly your migrations and needs no
# volume at run time. The build runs `lockmigrate validate` and `lockmigrate
# lint` on the result, so a malformed file name, a duplicate version, an
# unknown directive, a transactional CREATE INDEX CONCURRENTLY or a lint
# finding at error (docs/lint.md) fails the build instead of the rollout.
#
# /lockmigrate is pure Go (CGO_ENABLED=0). PostgreSQL's parser (libpg_query,
# C), which `lint` and the LOCKMIGRATE_LINT gate need, is the second binary,
# /lockmigrate-pgparse: built with cgo and linked statically (glibc's libc.a
# from the builder's libc6-dev; netgo and osusergo keep the resolver and
# user lookups in Go, so nothing needs a shared library or NSS at run time).
# lockmigrate starts it from next to itself as a co-process only when it
# lints, once per process: a replica that finds everything applied never
# maps or starts it (docs/lint.md, "The parser, and what it costs").
#
#   docker build -t registry.example.com/app-migrate:1.4.0 \
#     --build-arg MIGRATIONS=db/migrations \
#     --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) .
#
# The directory must be inside the build context and not excluded by
# .dockerignore (the context is this repository: copy your migrations into it,
# or build from a checkout of it that has them). Alternatively mount a
# directory at run time and point LOCKMIGRATE_DIR at it.
#
# Build arguments:
#   GO_IMAGE    builder image (default golang:1.26-bookworm; pin a digest with
#               --build-arg GO_IMAGE=golang:1.26-bookworm@sha256:...)
#   MIGRATIONS  directory of the build context holding the *.sql files to embed
#               (default: migrations, the example set)
#   VERSION     printed by `lockmigrate version`, logged by every run and set
#               as the image version label (default: dev)
#   REVISION    VCS revision for the org.opencontainers.image.revision label
#   SOURCE      org.opencontainers.image.source label
#   LICENSES    SPDX expression for the org.opencontainers.image.licenses label
#
# scripts/image-test.sh builds this file with podman/buildah and runs the
# image against a throwaway PostgreSQL.

ARG GO_IMAGE=golang:1.26-bookworm
ARG VERSION=dev

# ---------------------------------------------------------------------------
FROM ${GO_IMAGE} AS build
WORKDIR /src

# What the final stage takes from this one, all under /out: the user
# database (nonroot = 65532, as in distroless) and the CA bundle for TLS to
# PostgreSQL (sslmode=verify-full) and to a Pushgateway over https.
RUN set -eu; \
    mkdir -p /out/etc/ssl/certs; \
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >/out/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >/out/etc/group; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

# Modules first, in their own layer: editing the sources does not download
# them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go mod download

COPY . .

# The parser helper does not embed the migrations: a build that only changes
# MIGRATIONS reuses this layer.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo \
        -ldflags "-s -w -linkmode external -extldflags -static" -o /out/lockmigrate-pgparse ./cmd/lockmigrate-pgparse

# Replace the embedded set with the top-level *.sql files of $MIGRATIONS
# (migrations/embed.go stays). With the default this copies the set onto
# itself.
ARG MIGRATIONS=migrations
COPY ${MIGRATIONS}/ /tmp/migrations/
RUN set -eu; \
    if ! ls /tmp/migrations/*.sql >/dev/null 2>&1; then \
        echo "MIGRATIONS=${MIGRATIONS}: no *.sql file at the top level of that directory" >&2; \
        exit 1; \
    fi; \
    rm -f migrations/*.sql; \
    cp /tmp/migrations/*.sql migrations/; \
    rm -rf /tmp/migrations

ARG VERSION
# FORMAT is the LOCKMIGRATE_FORMAT the image's set is validated with (auto:
# detected per file); a set that needs a forced format needs the same value
# at run time.
ARG FORMAT=auto
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/lockmigrate . \
    && env -i LOCKMIGRATE_FORMAT="${FORMAT}" /out/lockmigrate validate \
    && env -i LOCKMIGRATE_FORMAT="${FORMAT}" /out/lockmigrate lint

# ---------------------------------------------------------------------------
FROM scratch

ARG VERSION
ARG REVISION=
ARG SOURCE=https://github.com/lockmigrate/lockmigrate
ARG LICENSES=NOASSERTION

LABEL org.opencontainers.image.title="lockmigrate" \
      org.opencontainers.image.description="Applies SQL migrations to PostgreSQL exactly once, from many replicas at once, under an advisory lock" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=build /out/etc/passwd /out/etc/group /etc/
COPY --from=build /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/lockmigrate /out/lockmigrate-pgparse /

USER 65532:65532
ENTRYPOINT ["/lockmigrate"]
