# blanket in a container. Build from the repository's root:  docker build -t blanket .
#
# The image runs the server by default; run a worker from the same image with
# `blanket worker --server URL ...` as the command (examples/docker/compose.yaml does both).
# It listens on 0.0.0.0:8773 inside the container, so the server refuses plain HTTP until you
# choose: BLANKET_TLS=self-signed (HTTPS; workers pin its fingerprint), or BLANKET_INSECURE=true
# on a private network only (the compose file's choice, its port published on loopback).
# The data dir (store, task folders, admin token, log) is the volume /var/lib/blanket; put
# your config directory at /etc/blanket/conf.d (a read-only bind mount of your git checkout).

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY blanket ./blanket
RUN python -m venv /opt/blanket \
 && /opt/blanket/bin/pip install --no-cache-dir '.[postgres]'

FROM python:3.12-slim-bookworm
# A user of its own (not root); the data dir is its, mode 0700. Tasks a worker runs in this
# image run as this user too: install what they need in an image built FROM this one.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/blanket \
      --shell /usr/sbin/nologin blanket \
 && install -d -o blanket -g blanket -m 0700 /var/lib/blanket \
 && install -d -m 0755 /etc/blanket/conf.d
COPY --from=build /opt/blanket /opt/blanket
ENV PATH=/opt/blanket/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BLANKET_CONFIG_DIR=/etc/blanket/conf.d \
    BLANKET_DATA_DIR=/var/lib/blanket \
    BLANKET_INBOX_DIR=/var/lib/blanket/inbox \
    BLANKET_HOST=0.0.0.0 \
    BLANKET_PORT=8773
USER 10001:10001
WORKDIR /var/lib/blanket
VOLUME ["/var/lib/blanket"]
EXPOSE 8773
# GET /health answers anyone (no token); over HTTPS (BLANKET_TLS) set BLANKET_HEALTH_URL to
# https://127.0.0.1:8773/health: the check then does not verify the certificate (it is this
# container's own server).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, ssl, sys, urllib.request; c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE; port = os.environ.get('BLANKET_PORT', '8773'); url = os.environ.get('BLANKET_HEALTH_URL', f'http://127.0.0.1:{port}/health'); sys.exit(urllib.request.urlopen(url, timeout=4, context=c).status != 200)"]
CMD ["blanket", "server"]
