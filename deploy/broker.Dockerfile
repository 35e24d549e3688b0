# Image of the Baton broker. Build from the repository root: make images
#
# Built from the broker's own module (GOWORK=off): the test module of the
# workspace and its dependencies stay out of the image build.
FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that the download is cached across source changes.
COPY proto/go.mod proto/go.sum proto/
COPY settings/go.mod settings/go.sum settings/
COPY status/go.mod status/go.sum status/
COPY worker/go.mod worker/go.sum worker/
COPY broker/go.mod broker/go.sum broker/
RUN cd broker && GOWORK=off go mod download
COPY proto proto
COPY settings settings
COPY status status
COPY worker worker
COPY broker broker
ARG VERSION=dev
RUN cd broker && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /broker
# distroless "nonroot", given by number so that the kubelet can verify
# runAsNonRoot (deploy/kubernetes sets runAsUser/runAsGroup 65532 as well).
USER 65532:65532
ENTRYPOINT ["/broker"]
