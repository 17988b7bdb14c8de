#!/usr/bin/env bash
# Installs the Debian packages strangler needs when they are missing (only when run as root;
# otherwise prints the apt-get line to run). Usage: scripts/ensure-deps.sh [--perf]
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
# scripts/module-cycles.py (the import-cycle check in make test)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# cdc-sync's replication client (pg_walstream) links libpq.
[ -e /usr/include/postgresql/libpq-fe.h ] || need+=(libpq-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PG_BIN:-}" ]; then
    need+=(postgresql-15)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
# the rollout Prometheus gate's test (gateway/tests/rollout.rs) runs a real Prometheus
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# the dashboard's browser tests (gateway/tests/ui.rs): headless Chromium driven over WebDriver
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# the gateway's shared rate limit tests start their own redis-server on a free port
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ "${1:-}" = "--perf" ]; then
    command -v nginx >/dev/null 2>&1 || need+=(nginx)
    command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    # gateway-bench.sh's HTTPS rows: h2load for HTTP/2, openssl for the self-signed certificate
    command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    # gateway-bench.sh's Caddy row (a reverse proxy users pick)
    command -v caddy >/dev/null 2>&1 || need+=(caddy)
    # the benchmarks' GET of /metrics and the admin API
    command -v curl >/dev/null 2>&1 || need+=(curl)
fi

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]}" >&2
    echo "install them with:  sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "==> installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
# Debian's nginx, haproxy and caddy packages start a system-wide service on install (where an
# init system runs); the benchmarks start their own instances on free ports and never use them.
for svc in nginx haproxy caddy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
    fi
done
# Debian starts a default cluster on port 5432 after installing the server; we never use it.
if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
fi
