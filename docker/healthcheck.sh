#!/bin/bash
# Docker HEALTHCHECK for ferroserve without curl: GET /v2/health/live over bash's /dev/tcp and
# succeed on HTTP 200. Liveness, not readiness: a draining server (readiness 503 after SIGTERM)
# is still healthy. Port: FERROSERVE_HTTP_PORT (default 8000); host: FERROSERVE_HEALTHCHECK_HOST
# (default 127.0.0.1, right when the server listens on 0.0.0.0 or 127.0.0.1).
set -euo pipefail
host="${FERROSERVE_HEALTHCHECK_HOST:-127.0.0.1}"
port="${FERROSERVE_HTTP_PORT:-8000}"
exec 3<>"/dev/tcp/${host}/${port}"
printf 'GET /v2/health/live HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
IFS=' ' read -r _version status _reason <&3
exec 3<&-
[ "${status:-}" = "200" ]
