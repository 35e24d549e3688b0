# Image of the Baton worker. Build from the repository root: make images
#
# The worker parses where clauses with PostgreSQL's own parser
# (pganalyze/pg_query_go, C code): it is built with cgo and runs on
# distroless/base (glibc), not static.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/worker ./worker/cmd/worker

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/worker /worker
USER nonroot
ENTRYPOINT ["/worker"]
