# syntax=docker/dockerfile:1
# mcpid-policy image for machines with Docker or BuildKit. Build from the
# repository root (every module is in the context; GOWORK=off builds the
# service module alone, with its replace directives):
#
#   docker build -f deploy/images/policy.Dockerfile -t mcpid-policy .
#
# `make images` builds an equivalent image without a container engine
# (deploy/cmd/mkimage): same user, same CA bundle path, same entrypoint.

FROM golang:1.26-bookworm AS build
ENV GOTOOLCHAIN=go1.26.10 GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false
WORKDIR /src
# The service module's replace directives point at ../../gen, ../../lib
# and (token) the other service modules, so those are in the context too.
COPY gen/ gen/
COPY lib/ lib/
COPY services/ services/
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    cd services/policy && go build -trimpath -ldflags='-s -w' -o /out/mcpid-policy .

# distroless/static: no shell, no package manager; CA certificates at
# /etc/ssl/certs/ca-certificates.crt (outbound CIMD, jwks_uri and SSO
# fetches verify against them), /etc/passwd with nonroot = 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mcpid-policy /usr/local/bin/mcpid-policy
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    MCPID_GRPC_ADDR=:7003 \
    MCPID_HTTP_ADDR=:7103
EXPOSE 7003 7103
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mcpid-policy"]
