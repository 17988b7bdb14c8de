#!/usr/bin/env bash
# Gateway throughput/latency benchmark (not a test).
#
# Starts a fixed upstream (nginx returning a small JSON body), then three proxies in front of it,
# each with ONE worker: nginx (reverse proxy), HAProxy, and strangler-gateway with a generated
# 1,000-route routes.toml. Drives each in turn with wrk on loopback (same connections and
# duration, alternating rounds) and prints req/s, p50 and p99 per proxy plus the ratios.
# The last line is machine-readable:
#   RESULT gateway_vs_nginx_rps=... gateway_vs_haproxy_rps=... gateway_vs_nginx_p99=... gateway_user_us_per_req=... nginx_user_us_per_req=...
#
# Usage: tests/perf/gateway-bench.sh [DURATION_S=8] [CONNECTIONS=32] [ROUNDS=3]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, i.e. the LTO profile the
#        gateway ships with; built if missing)
#        WRK_THREADS (default 1)
#        MINIMAL=1 also runs two floors built with the same settings and profile:
#          "pingora" = gateway/examples/minimal_proxy.rs (pingora-proxy with only upstream_peer),
#                      what our callbacks cost on top of Pingora's proxy framework;
#          "pg-core" = gateway/examples/core_proxy.rs (a forwarder on pingora-core alone),
#                      what Pingora's HTTP/1 stack costs without the proxy framework;
#        the RESULT line then adds gateway_vs_minimal_pingora_rps and core_vs_nginx_rps.
# Besides req/s and latency it prints the CPU time each proxy process spent per request
# (user and kernel, from /proc/PID/stat over the measured runs): steadier than req/s on a
# shared machine, and it shows where the difference is (see docs/perf.md).
set -euo pipefail

DURATION=${1:-8}
CONNS=${2:-32}
ROUNDS=${3:-3}
WRK_THREADS=${WRK_THREADS:-1}
(( DURATION <= 10 )) || { echo "keep each wrk run <= 10 s" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GATEWAY_BIN:-$ROOT/target/release-gw/strangler-gateway}
if [[ ! -x $BIN ]]; then
  (cd "$ROOT" && cargo build --profile release-gw -p strangler-gateway)
fi
NAMES="nginx haproxy gateway"
if [[ ${MINIMAL:-0} == 1 ]]; then
  NAMES="$NAMES pingora pg-core"
  MIN_BIN=$ROOT/target/release-gw/examples/minimal_proxy
  CORE_BIN=$ROOT/target/release-gw/examples/core_proxy
  (cd "$ROOT" && cargo build --profile release-gw -p strangler-gateway --example minimal_proxy --example core_proxy)
fi
REVERSED=$(tr ' ' '\n' <<<"$NAMES" | tac | tr '\n' ' ')
. "$ROOT/tests/perf/lib.sh"
require nginx haproxy wrk
bench_setup gw-bench
UP=$(port); NGX=$(port); HAP=$(port); GW=$(port); GWA=$(port)

# --- upstream: nginx, small JSON --------------------------------------------------------------
start_json_upstream "$WORK/up" "$UP"
mkdir -p "$WORK/ngx"

# --- nginx reverse proxy, one worker ----------------------------------------------------------
cat > "$WORK/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/ngx/error.log warn;
pid $WORK/ngx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" & PIDS+=($!)
NGX_MASTER=$!

# --- HAProxy, one thread ----------------------------------------------------------------------
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend fe
  bind 127.0.0.1:$HAP
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$UP
EOF
haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!)
declare -A PID_OF=([haproxy]=$!)

# --- strangler-gateway, one thread, 1,000 routes ----------------------------------------------
{
  echo "[gateway]"
  echo "listen = \"127.0.0.1:$GW\""
  echo "admin_listen = \"127.0.0.1:$GWA\""
  echo "admin_token = \"bench\""
  echo "threads = 1"
  echo
  echo "[defaults]"
  echo "upstream = \"legacy\""
  echo "[upstreams.legacy]"
  echo "endpoints = [\"127.0.0.1:$UP\"]"
  echo "[upstreams.svc]"
  echo "endpoints = [\"127.0.0.1:$UP\"]"
  for i in $(seq 0 999); do
    case $((i % 4)) in
      0) stage='stage = "legacy"' ;;
      1) stage=$'to = "svc"\nstage = "extracted"' ;;
      2) stage=$'to = "svc"\nstage = "canary"\nweight = 30' ;;
      3) stage=$'to = "svc"\nstage = "extracted"\nfallback = "legacy"' ;;
    esac
    printf '[[routes]]\nname = "r%d"\nmatch = { path = "/api/svc%d/items/{id}" }\n%s\n' "$i" "$i" "$stage"
  done
} > "$WORK/routes.toml"
"$BIN" check "$WORK/routes.toml" > /dev/null
RUST_LOG=error "$BIN" run --config "$WORK/routes.toml" --no-watch \
  --pid-file "$WORK/gw.pid" --upgrade-sock "$WORK/gw-upgrade.sock" > "$WORK/gw.log" 2>&1 & PIDS+=($!)
PID_OF[gateway]=$!

if [[ ${MINIMAL:-0} == 1 ]]; then
  MIN=$(port)
  "$MIN_BIN" "127.0.0.1:$MIN" "127.0.0.1:$UP" > "$WORK/minimal.log" 2>&1 & PIDS+=($!)
  PID_OF[pingora]=$!
  CORE=$(port)
  "$CORE_BIN" "127.0.0.1:$CORE" "127.0.0.1:$UP" > "$WORK/core.log" 2>&1 & PIDS+=($!)
  PID_OF[pg-core]=$!
  wait_port "$MIN"; wait_port "$CORE"
fi
for p in $UP $NGX $HAP $GW; do wait_port "$p"; done
PID_OF[nginx]=$(pgrep -P "$NGX_MASTER" | head -1)   # the one worker, not the master

# cpu_ticks PID: user and system CPU ticks (1/CLK_TCK s) the process has used so far.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
TCK=$(getconf CLK_TCK)

# the gateway path hits route r777 (canary 30%... r777 % 4 == 1: extracted) deep in the table
declare -A PATHS=([nginx]="/api/svc777/items/9" [haproxy]="/api/svc777/items/9" [gateway]="/api/svc777/items/9" [pingora]="/api/svc777/items/9" [pg-core]="/api/svc777/items/9")
declare -A PORTS=([nginx]=$NGX [haproxy]=$HAP [gateway]=$GW [pingora]=${MIN:-0} [pg-core]=${CORE:-0})

# warm-up
for n in $NAMES; do
  wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORTS[$n]}${PATHS[$n]}" > /dev/null
done

declare -A RPS P50 P99 UT ST NREQ
for n in $NAMES; do RPS[$n]=""; P50[$n]=""; P99[$n]=""; UT[$n]=0; ST[$n]=0; NREQ[$n]=0; done
for r in $(seq 1 "$ROUNDS"); do
  # alternate the order each round so drift (thermal, neighbours) hits everyone alike
  if (( r % 2 )); then order=$NAMES; else order=$REVERSED; fi
  for n in $order; do
    read -r u0 s0 < <(cpu_ticks "${PID_OF[$n]}")
    wrk_run "http://127.0.0.1:${PORTS[$n]}${PATHS[$n]}"
    read -r u1 s1 < <(cpu_ticks "${PID_OF[$n]}")
    UT[$n]=$((UT[$n] + u1 - u0)); ST[$n]=$((ST[$n] + s1 - s0)); NREQ[$n]=$((NREQ[$n] + RUN_REQS))
    rps=$RUN_RPS; p50=$RUN_P50; p99=$RUN_P99
    RPS[$n]+="$rps "; P50[$n]+="$p50 "; P99[$n]+="$p99 "
    printf 'round %d %-8s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' "$r" "$n" "$rps" "$p50" "$p99"
  done
done


echo
echo "median of $ROUNDS rounds, wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, one worker each, loopback"
echo "CPU columns: the proxy process's CPU time per request over all rounds (user / kernel, microseconds)"
printf '| %-8s | %10s | %8s | %8s | %8s | %8s |\n' proxy "req/s" "p50 ms" "p99 ms" "user us" "sys us"
printf '|----------|-----------:|---------:|---------:|---------:|---------:|\n'
declare -A MR MP50 MP99 USR
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$TCK" 'BEGIN{ printf "%.2f", (n>0 ? t*1e6/hz/n : 0) }'; }
for n in $NAMES; do
  MR[$n]=$(median "${RPS[$n]}"); MP50[$n]=$(median "${P50[$n]}"); MP99[$n]=$(median "${P99[$n]}")
  USR[$n]=$(us_per_req "${UT[$n]}" "${NREQ[$n]}")
  printf '| %-8s | %10.0f | %8.3f | %8.3f | %8s | %8s |\n' "$n" "${MR[$n]}" "${MP50[$n]}" "${MP99[$n]}" \
    "${USR[$n]}" "$(us_per_req "${ST[$n]}" "${NREQ[$n]}")"
done
echo
extra=""
if [[ ${MINIMAL:-0} == 1 ]]; then
  extra=" gateway_vs_minimal_pingora_rps=$(ratio "${MR[gateway]}" "${MR[pingora]}") core_vs_nginx_rps=$(ratio "${MR[pg-core]}" "${MR[nginx]}")"
fi
echo "RESULT gateway_vs_nginx_rps=$(ratio "${MR[gateway]}" "${MR[nginx]}")" \
  "gateway_vs_haproxy_rps=$(ratio "${MR[gateway]}" "${MR[haproxy]}")" \
  "gateway_vs_nginx_p99=$(ratio "${MP99[gateway]}" "${MP99[nginx]}")" \
  "gateway_user_us_per_req=${USR[gateway]} nginx_user_us_per_req=${USR[nginx]}$extra"
