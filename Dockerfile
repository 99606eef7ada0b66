# choripan as a container: a builder stage with Node, Python and a compiler runs `npm ci` (which sets up
# Python, builds the addon and exports the default model) and `npm run bundle`; the runtime stage is a
# slim Node image with the bundle alone: no Python, no compiler, ~510 MB of it, libtorch included.
#
#   docker build -t choripan .
#   docker run --rm -p 8080:8080 choripan
#
# The default model is compiled for the builder's CPU (docs/deploy.md): build on the CPU family you run on.

FROM node:20-bookworm AS builder
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv g++ cmake libjpeg62-turbo-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN npm ci && npm run bundle -- --out /dist

FROM node:20-bookworm-slim
COPY --from=builder --chown=1000:1000 /dist/choripan /opt/choripan
# the image's `node` user, by number so that the host can resolve it
USER 1000:1000
ENV HOST=0.0.0.0 \
    PORT=8080 \
    NODE_ENV=production
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
CMD ["/opt/choripan/serve"]
