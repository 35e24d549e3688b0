# Image of the Baton worker. Build from the repository root: make images
#
# The worker parses where clauses with PostgreSQL's own parser
# (pganalyze/pg_query_go, C code): it is built with cgo and runs on
# distroless/base (glibc), not static. Built from the worker's own module
# (GOWORK=off): the test module of the workspace stays out of the image build.
FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that the download is cached across source changes.
COPY proto/go.mod proto/go.sum proto/
COPY settings/go.mod settings/go.sum settings/
COPY status/go.mod status/go.sum status/
COPY worker/go.mod worker/go.sum worker/
RUN cd worker && GOWORK=off go mod download
COPY proto proto
COPY settings settings
COPY status status
COPY worker worker
ARG VERSION=dev
RUN cd worker && GOWORK=off CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/worker ./cmd/worker

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/worker /worker
# distroless "nonroot", given by number so that the kubelet can verify
# runAsNonRoot (deploy/kubernetes sets runAsUser/runAsGroup 65532 as well).
USER 65532:65532
ENTRYPOINT ["/worker"]
