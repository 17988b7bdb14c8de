#!/usr/bin/env bash
# Gateway throughput/latency benchmark (not a test).
#
# Starts a fixed upstream (nginx returning a small JSON body), then three proxies in front of it,
# each with ONE worker: nginx (reverse proxy), HAProxy, Caddy (GOMAXPROCS=1) and strangler-gateway with a generated
# 1,000-route routes.toml. Drives each in turn with wrk on loopback (same connections and
# duration, alternating rounds) and prints req/s, p50 and p99 per proxy plus the ratios.
# Then the same over TLS, nginx against the gateway with the same self-signed P-256 certificate
# (TLS 1.2 and 1.3, in-memory session cache, no tickets, as rustls' defaults): "https1" rows are
# wrk over https:// (HTTP/1.1, one request in flight per connection), "h2" rows are h2load over
# ALPN h2 (same connections, H2_STREAMS streams in flight on each); both in the same alternating
# rounds as the plaintext rows. The last line is machine-readable:
#   RESULT gateway_vs_nginx_rps=... gateway_vs_haproxy_rps=... gateway_vs_caddy_rps=... gateway_vs_nginx_p99=... gateway_user_us_per_req=... nginx_user_us_per_req=...
#   ... auth_vs_plain_rps=... (a JWT + local rate limit route over the plain extracted route, same gateway)
#          gateway_vs_nginx_cpu=... gateway_vs_caddy_cpu=... https1_vs_nginx_rps=... https2_vs_nginx_rps=... https1_vs_nginx_cpu=... https2_vs_nginx_cpu=... load1=...
#   (*_cpu: the gateway's user+kernel CPU time per request over nginx's, plain, HTTPS/1.1 and
#   HTTPS/2; load1: the 1-minute load average at the end)
#
# Usage: tests/perf/gateway-bench.sh [DURATION_S=8] [CONNECTIONS=32] [ROUNDS=3]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, i.e. the LTO profile the
#        gateway ships with; built if missing)
#        WRK_THREADS (default 1)
#        H2_STREAMS (default 10): h2load -m, concurrent streams per HTTP/2 connection
#        TLS=0 skips the HTTPS rows (and their RESULT keys)
#        PROFILE (default release-gw): the cargo profile the binaries come from
#        MINIMAL=1 also runs two floors built with the same settings and profile:
#          "pingora" = gateway/examples/minimal_proxy.rs (pingora-proxy with only upstream_peer),
#                      what our callbacks cost on top of Pingora's proxy framework;
#          "pg-core" = gateway/examples/core_proxy.rs (a forwarder on pingora-core alone),
#                      what Pingora's HTTP/1 stack costs without the proxy framework;
#        the RESULT line then adds gateway_vs_minimal_pingora_rps, gateway_vs_minimal_user_cpu
#        (user CPU per request, gateway / minimal) and core_vs_nginx_rps.
# Besides req/s and latency it prints the CPU time each proxy process spent per request
# (user and kernel, from /proc/PID/stat over the measured runs): steadier than req/s on a
# shared machine, and it shows where the difference is (see docs/perf.md).
set -euo pipefail

DURATION=${1:-8}
CONNS=${2:-32}
ROUNDS=${3:-3}
WRK_THREADS=${WRK_THREADS:-1}
H2_STREAMS=${H2_STREAMS:-10}
TLS=${TLS:-1}
(( DURATION <= 10 )) || { echo "keep each wrk run <= 10 s" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# PROFILE=release: the gateway and the floors from the plain release profile (compare like with
# like; the shipped binary is release-gw)
PROFILE=${PROFILE:-release-gw}
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
BIN=${GATEWAY_BIN:-$OUT/strangler-gateway}
if [[ ! -x $BIN ]]; then
  (cd "$ROOT" && cargo build --profile "$PROFILE" -p strangler-gateway)
fi
NAMES="nginx haproxy caddy gateway"
if [[ ${MINIMAL:-0} == 1 ]]; then
  NAMES="$NAMES pingora pg-core"
  MIN_BIN=$OUT/examples/minimal_proxy
  CORE_BIN=$OUT/examples/core_proxy
  (cd "$ROOT" && cargo build --profile "$PROFILE" -p strangler-gateway --example minimal_proxy --example core_proxy)
fi
. "$ROOT/tests/perf/lib.sh"
TOOLS="nginx haproxy caddy wrk"
[[ $TLS == 1 ]] && TOOLS="$TOOLS h2load openssl"
ensure_tools $TOOLS
bench_setup gw-bench
UP=$(port); NGX=$(port); HAP=$(port); CAD=$(port); GW=$(port); GWA=$(port); NGXS=$(port); GWS=$(port)
LOAD_START=$(loadavg)

# --- one self-signed P-256 certificate for both TLS listeners ---------------------------------
if [[ $TLS == 1 ]]; then
  mkdir -p "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls/leaf.key" -out "$WORK/tls/leaf.crt" 2>/dev/null
fi

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
  # 512 idle upstream connections, as the gateway's pool: the h2 rows have CONNS x H2_STREAMS
  # requests in flight, and a smaller pool would make nginx open and close upstream connections
  upstream backend { server 127.0.0.1:$UP; keepalive 512; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
EOF
if [[ $TLS == 1 ]]; then
  cat >> "$WORK/ngx/nginx.conf" <<EOF
  server {
    listen 127.0.0.1:$NGXS ssl http2;
    ssl_certificate $WORK/tls/leaf.crt;
    ssl_certificate_key $WORK/tls/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    ssl_session_tickets off;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
EOF
fi
echo "}" >> "$WORK/ngx/nginx.conf"
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

# --- Caddy, one OS thread running Go code (GOMAXPROCS=1), no admin endpoint, no access log ----
mkdir -p "$WORK/caddy"
cat > "$WORK/caddy/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://127.0.0.1:$CAD {
  reverse_proxy 127.0.0.1:$UP {
    transport http {
      keepalive_idle_conns 512
      keepalive_idle_conns_per_host 512
    }
  }
}
EOF
XDG_DATA_HOME=$WORK/caddy XDG_CONFIG_HOME=$WORK/caddy GOMAXPROCS=1 \
  caddy run --config "$WORK/caddy/Caddyfile" --adapter caddyfile > "$WORK/caddy/caddy.log" 2>&1 & PIDS+=($!)
PID_OF[caddy]=$!

# --- a JWKS with one HS256 key, and a token signed with it (openssl HMAC) ----------------------
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
JWT_SECRET=bench-secret-for-the-auth-row
printf '{"keys":[{"kty":"oct","kid":"bench","alg":"HS256","k":"%s"}]}' \
  "$(printf %s "$JWT_SECRET" | b64url)" > "$WORK/jwks.json"
JWT_SIGNED="$(printf '{"alg":"HS256","typ":"JWT","kid":"bench"}' | b64url).$(printf '{"sub":"bench","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)"
JWT="$JWT_SIGNED.$(printf %s "$JWT_SIGNED" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)"

# --- strangler-gateway, one thread, 1,000 routes ----------------------------------------------
{
  echo "[gateway]"
  echo "listen = \"127.0.0.1:$GW\""
  echo "admin_listen = \"127.0.0.1:$GWA\""
  echo "admin_token = \"bench\""
  echo "threads = 1"
  if [[ $TLS == 1 ]]; then
    echo "[gateway.tls]"
    echo "listen = \"127.0.0.1:$GWS\""
    echo "certificates = [{ cert = \"$WORK/tls/leaf.crt\", key = \"$WORK/tls/leaf.key\" }]"
    echo "http2 = true"
  fi
  echo
  echo "[defaults]"
  echo "upstream = \"legacy\""
  echo "[upstreams.legacy]"
  echo "endpoints = [\"127.0.0.1:$UP\"]"
  echo "[upstreams.svc]"
  echo "endpoints = [\"127.0.0.1:$UP\"]"
  # the gateway-auth row: a JWT (HS256) route with a local per-consumer rate limit set high
  # enough never to refuse, to measure what authentication and limiting cost per request
  echo "[auth.jwt]"
  echo "algorithms = [\"HS256\"]"
  echo "jwks_file = \"$WORK/jwks.json\""
  echo "[consumers.bench]"
  echo "jwt_subjects = [\"bench\"]"
  printf '[[routes]]\nname = "authed"\nmatch = { path = "/api/authed/items/{id}" }\nto = "svc"\nstage = "extracted"\n'
  printf 'auth = "jwt"\nrate_limit = [{ by = "consumer", rps = 1000000, burst = 1000000 }]\n'
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
for p in $UP $NGX $HAP $CAD $GW; do wait_port "$p"; done
if [[ $TLS == 1 ]]; then wait_port "$NGXS"; wait_port "$GWS"; fi
PID_OF[nginx]=$(pgrep -P "$NGX_MASTER" | head -1)   # the one worker, not the master

# cpu_ticks PID: user and system CPU ticks (1/CLK_TCK s) the process has used so far.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
TCK=$(getconf CLK_TCK)

# the gateway path hits route r777 (canary 30%... r777 % 4 == 1: extracted) deep in the table
TARGET=/api/svc777/items/9
# A case is one row of the table: the process that serves it (PROC), the load tool, the URL.
declare -A PROC TOOL URL
for n in $NAMES; do PROC[$n]=$n; TOOL[$n]=wrk; done
URL=([nginx]="http://127.0.0.1:$NGX$TARGET" [haproxy]="http://127.0.0.1:$HAP$TARGET" [caddy]="http://127.0.0.1:$CAD$TARGET"
     [gateway]="http://127.0.0.1:$GW$TARGET" [pingora]="http://127.0.0.1:${MIN:-0}$TARGET"
     [pg-core]="http://127.0.0.1:${CORE:-0}$TARGET")
# the same gateway, a route with JWT auth and a local rate limit
PROC+=([gateway-auth]=gateway); TOOL+=([gateway-auth]=wrk)
URL+=([gateway-auth]="http://127.0.0.1:$GW/api/authed/items/9")
CASES="$NAMES gateway-auth"
if [[ $TLS == 1 ]]; then
  # wrk offers no ALPN, so *-https1 is HTTP/1.1 over TLS; h2load offers only h2 (checked per run)
  PROC+=([nginx-https1]=nginx [gateway-https1]=gateway [nginx-h2]=nginx [gateway-h2]=gateway)
  TOOL+=([nginx-https1]=wrk [gateway-https1]=wrk [nginx-h2]=h2load [gateway-h2]=h2load)
  URL+=([nginx-https1]="https://127.0.0.1:$NGXS$TARGET" [gateway-https1]="https://127.0.0.1:$GWS$TARGET"
        [nginx-h2]="https://127.0.0.1:$NGXS$TARGET" [gateway-h2]="https://127.0.0.1:$GWS$TARGET")
  CASES="$CASES nginx-https1 gateway-https1 nginx-h2 gateway-h2"
fi
REVERSED=$(tr ' ' '\n' <<<"$CASES" | tac | tr '\n' ' ')
# run_case CASE SECONDS: one load run bounded in time, sets RUN_RPS RUN_P50 RUN_P99 RUN_REQS
run_case() {
  local DURATION=$2
  local WRK_HEADER=""
  [[ $1 == gateway-auth ]] && WRK_HEADER="Authorization: Bearer $JWT"
  if [[ ${TOOL[$1]} == h2load ]]; then h2load_run "${URL[$1]}"; else wrk_run "${URL[$1]}"; fi
}

# warm-up; for h2load, print what TLS negotiated
for c in $CASES; do
  run_case "$c" 2
  if [[ ${TOOL[$c]} == h2load ]]; then echo "$c: $RUN_TLS"; fi
done

declare -A RPS P50 P99 UT ST NREQ
for c in $CASES; do RPS[$c]=""; P50[$c]=""; P99[$c]=""; UT[$c]=0; ST[$c]=0; NREQ[$c]=0; done
for r in $(seq 1 "$ROUNDS"); do
  # alternate the order each round so drift (thermal, neighbours) hits everyone alike
  if (( r % 2 )); then order=$CASES; else order=$REVERSED; fi
  for c in $order; do
    pid=${PID_OF[${PROC[$c]}]}
    read -r u0 s0 < <(cpu_ticks "$pid")
    run_case "$c" "$DURATION"
    read -r u1 s1 < <(cpu_ticks "$pid")
    UT[$c]=$((UT[$c] + u1 - u0)); ST[$c]=$((ST[$c] + s1 - s0)); NREQ[$c]=$((NREQ[$c] + RUN_REQS))
    rps=$RUN_RPS; p50=$RUN_P50; p99=$RUN_P99
    RPS[$c]+="$rps "; P50[$c]+="$p50 "; P99[$c]+="$p99 "
    printf 'round %d %-14s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' "$r" "$c" "$rps" "$p50" "$p99"
  done
done
LOAD_END=$(loadavg)


echo
echo "median of $ROUNDS rounds, -c$CONNS -d${DURATION}s, one worker each, loopback;" \
  "load average at start $LOAD_START, at end $LOAD_END"
echo "plain rows and *-https1: wrk -t$WRK_THREADS (HTTP/1.1); *-h2: h2load -t1 -m$H2_STREAMS" \
  "(p50/p99 from its per-request log)"
echo "CPU columns: the proxy process's CPU time per request over all rounds (user / kernel, microseconds;" \
  "Caddy's Go runtime also runs its garbage collector and netpoller on other threads, counted here)"
printf '| %-14s | %10s | %8s | %8s | %8s | %8s |\n' proxy "req/s" "p50 ms" "p99 ms" "user us" "sys us"
printf '|----------------|-----------:|---------:|---------:|---------:|---------:|\n'
declare -A MR MP50 MP99 USR SYS
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$TCK" 'BEGIN{ printf "%.2f", (n>0 ? t*1e6/hz/n : 0) }'; }
for c in $CASES; do
  MR[$c]=$(median "${RPS[$c]}"); MP50[$c]=$(median "${P50[$c]}"); MP99[$c]=$(median "${P99[$c]}")
  USR[$c]=$(us_per_req "${UT[$c]}" "${NREQ[$c]}"); SYS[$c]=$(us_per_req "${ST[$c]}" "${NREQ[$c]}")
  printf '| %-14s | %10.0f | %8.3f | %8.3f | %8s | %8s |\n' "$c" "${MR[$c]}" "${MP50[$c]}" "${MP99[$c]}" \
    "${USR[$c]}" "${SYS[$c]}"
done
# cpu_ratio A B: (user + kernel per request of A) / (the same of B)
cpu_ratio() {
  ratio "$(awk -v u="${USR[$1]}" -v s="${SYS[$1]}" 'BEGIN{print u+s}')" \
        "$(awk -v u="${USR[$2]}" -v s="${SYS[$2]}" 'BEGIN{print u+s}')"
}
echo
printf 'gateway / nginx   %8s %8s\n' "req/s" "CPU/req"
printf '  %-15s %8s %8s\n' "HTTP/1.1" "$(ratio "${MR[gateway]}" "${MR[nginx]}")" "$(cpu_ratio gateway nginx)"
printf '  %-15s %8s %8s   (gateway / caddy)\n' "HTTP/1.1" "$(ratio "${MR[gateway]}" "${MR[caddy]}")" "$(cpu_ratio gateway caddy)"
extra=" gateway_vs_nginx_cpu=$(cpu_ratio gateway nginx) gateway_vs_caddy_cpu=$(cpu_ratio gateway caddy)"
printf '  %-15s %8s %8s   (gateway-auth / gateway)\n' "JWT + limit" "$(ratio "${MR[gateway-auth]}" "${MR[gateway]}")" \
  "$(cpu_ratio gateway-auth gateway)"
extra+=" auth_vs_plain_rps=$(ratio "${MR[gateway-auth]}" "${MR[gateway]}")"
if [[ $TLS == 1 ]]; then
  printf '  %-15s %8s %8s\n' "HTTPS/1.1" "$(ratio "${MR[gateway-https1]}" "${MR[nginx-https1]}")" \
    "$(cpu_ratio gateway-https1 nginx-https1)"
  printf '  %-15s %8s %8s\n' "HTTPS/2" "$(ratio "${MR[gateway-h2]}" "${MR[nginx-h2]}")" \
    "$(cpu_ratio gateway-h2 nginx-h2)"
  extra+=" https1_vs_nginx_rps=$(ratio "${MR[gateway-https1]}" "${MR[nginx-https1]}")"
  extra+=" https2_vs_nginx_rps=$(ratio "${MR[gateway-h2]}" "${MR[nginx-h2]}")"
  extra+=" https1_vs_nginx_cpu=$(cpu_ratio gateway-https1 nginx-https1)"
  extra+=" https2_vs_nginx_cpu=$(cpu_ratio gateway-h2 nginx-h2)"
fi
echo
if [[ ${MINIMAL:-0} == 1 ]]; then
  printf '  %-15s %8s %8s   (gateway / minimal pingora-proxy; user CPU/req %s)\n' "HTTP/1.1" \
    "$(ratio "${MR[gateway]}" "${MR[pingora]}")" "$(cpu_ratio gateway pingora)" "$(ratio "${USR[gateway]}" "${USR[pingora]}")"
  extra+=" gateway_vs_minimal_pingora_rps=$(ratio "${MR[gateway]}" "${MR[pingora]}")"
  extra+=" gateway_vs_minimal_user_cpu=$(ratio "${USR[gateway]}" "${USR[pingora]}") core_vs_nginx_rps=$(ratio "${MR[pg-core]}" "${MR[nginx]}")"
fi
echo "RESULT gateway_vs_nginx_rps=$(ratio "${MR[gateway]}" "${MR[nginx]}")" \
  "gateway_vs_haproxy_rps=$(ratio "${MR[gateway]}" "${MR[haproxy]}")" \
  "gateway_vs_caddy_rps=$(ratio "${MR[gateway]}" "${MR[caddy]}")" \
  "gateway_vs_nginx_p99=$(ratio "${MP99[gateway]}" "${MP99[nginx]}")" \
  "gateway_user_us_per_req=${USR[gateway]} nginx_user_us_per_req=${USR[nginx]}$extra load1=${LOAD_END%% *}"
