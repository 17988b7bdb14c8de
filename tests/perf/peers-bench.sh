#!/usr/bin/env bash
# The job a migration gateway exists for, against what a team would otherwise configure (not a
# test). Every proxy runs ONE worker; every case is driven by the same wrk run, alternating the
# order per round.
#
# Shadowing at 100%: strangler-gateway at stage shadow with sample = 1.0 (mirror every request,
# compare the two JSON answers, keep the report) versus nginx `mirror` of every request to the
# same candidate (which compares nothing, and makes each client wait for its mirror). Two
# candidates: "fast" (nginx answering at once) and "slow" (the same nginx behind HAProxy with a
# Lua action that sleeps 50 ms, which costs it almost no CPU). "gw-off" is the same gateway on a
# route with shadowing off: the p99 the slow candidate must not move.
#
# Canary split at 10%: a gateway route at stage canary with weight 10 versus nginx
# `split_clients` (10% by request id) and HAProxy with two weighted servers (90/10).
#
# Prints req/s, p50, p99 and the proxy's CPU time per request (user + kernel; the gateway's whole
# process, shadow runtime included; nginx's one worker; HAProxy's process), the ratios, and the
# mirrors compared versus dropped. The last line is machine-readable:
#   RESULT shadow_vs_nginx_mirror_rps=... shadow_vs_nginx_mirror_p99=... shadow_vs_nginx_mirror_cpu=...
#          shadow_slow_vs_nginx_mirror_rps=... shadow_slow_candidate_p99_ratio=...
#          mirrors_dropped_pct_fast=... mirrors_dropped_pct_slow=... shadow_fast_like_for_like=0|1
#          canary_vs_nginx_split_rps=... canary_vs_nginx_split_p99=... canary_vs_haproxy_rps=...
#          canary_vs_haproxy_p99=... shadow_fixed_rate_rps=... shadow_fixed_rate_held=0|1
#          shadow_vs_nginx_mirror_p99_fixed_rate=... shadow_slow_fixed_rate_rps=...
#          shadow_slow_fixed_rate_held=0|1 shadow_slow_candidate_p99_ratio_fixed_rate=...
#          pinned=0|1 load1=...
# shadow_fast_like_for_like is 0 when the gateway dropped more than 5% of the fast candidate's
# mirrors (a starved shadow runtime on a busy machine): the fast ratios then compare less work.
# shadow_vs_nginx_mirror_p99_fixed_rate: the fast-candidate p99s at the same fixed request rate
# (half nginx mirror's maximum; see the part before the RESULT line for why the saturation p99
# ratio cannot say much on its own); shadow_fixed_rate_held=0 when a round missed that rate.
# shadow_slow_candidate_p99_ratio_fixed_rate: the gateway's p99 with the slow candidate over its
# p99 with shadowing off, both at half its shadow-off maximum (a normal load rather than
# saturation); shadow_slow_fixed_rate_held likewise.
# Targets (issue 16): shadow_vs_nginx_mirror_rps >= 1.6 with shadow_vs_nginx_mirror_p99 <= 0.2,
# shadow_slow_candidate_p99_ratio (gateway p99 with the slow candidate / with shadowing off) <= 1.1.
#
# Usage: tests/perf/peers-bench.sh [DURATION_S=5] [CONNECTIONS=32] [ROUNDS=2]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, built if missing)
#        WRK_THREADS (default 1), SLOW_MS (the slow candidate's delay, default 50)
#        FIXED_RATE=0 skips the fixed-rate part; RATE_CLIENTS (its connections, default 128)
#        CASES (default: all; a subset prints only its rows, and the RESULT ratios of missing
#        cases as 0), e.g. CASES="gw-off gw-shadow-slow" to look at one ratio over more rounds
#        PIN=1: every proxy under test (the gateway with all its threads, shadow runtime
#        included; the nginx master and worker; the canary HAProxy) on CPU 1; wrk, the legacy
#        upstream, the candidate and the slow candidate's HAProxy on CPU 0 (taskset), the same
#        for every case, so that the candidate's and the load generator's work cannot take the
#        proxy's core (other processes on the machine are not pinned). Printed in the header.
set -euo pipefail

DURATION=${1:-5}
CONNS=${2:-32}
ROUNDS=${3:-2}
SLOW_MS=${SLOW_MS:-50}
(( DURATION <= 10 )) || { echo "keep each wrk run <= 10 s" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/perf/lib.sh
source "$ROOT/tests/perf/lib.sh"
ensure_tools nginx haproxy wrk curl h2load
BIN=$(gateway_bin "$ROOT")
bench_setup peers-bench
LOAD_START=$(loadavg)

UP=$(port); CAND=$(port); SLOW=$(port); HAPC=$(port)
NGX_FAST=$(port); NGX_SLOW=$(port); NGX_SPLIT=$(port); GW=$(port); GWA=$(port)
start_json_upstream "$WORK/legacy" "$UP"; UP_MASTER=$!
start_json_upstream "$WORK/candidate" "$CAND"; CAND_MASTER=$!

# --- the slow candidate: HAProxy sleeping SLOW_MS (a yielding Lua sleep) before the candidate ---
cat > "$WORK/sleep.lua" <<LUA
core.register_action("delay", { "http-req" }, function(txn) core.msleep($SLOW_MS) end)
LUA
cat > "$WORK/slow.cfg" <<EOF
global
  nbthread 1
  maxconn 8192
  lua-load $WORK/sleep.lua
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend slow
  bind 127.0.0.1:$SLOW
  http-request lua.delay
  default_backend candidate
backend candidate
  http-reuse always
  server c1 127.0.0.1:$CAND
EOF
haproxy -f "$WORK/slow.cfg" -db > "$WORK/slow.log" 2>&1 & PIDS+=($!)
SLOW_PID=$!

# --- nginx, one worker: mirror to the fast and to the slow candidate, and a 10% split ---------
mkdir -p "$WORK/ngx"
cat > "$WORK/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/ngx/error.log warn;
pid $WORK/ngx/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream legacy { server 127.0.0.1:$UP; keepalive 512; }
  upstream candidate { server 127.0.0.1:$CAND; keepalive 512; }
  upstream slow { server 127.0.0.1:$SLOW; keepalive 512; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  split_clients "\$request_id" \$canary { 10% candidate; * legacy; }
  server {
    listen 127.0.0.1:$NGX_FAST;
    location / { mirror /mirror; proxy_pass http://legacy; }
    location = /mirror { internal; proxy_pass http://candidate\$request_uri; }
  }
  server {
    listen 127.0.0.1:$NGX_SLOW;
    location / { mirror /mirror; proxy_pass http://legacy; }
    location = /mirror { internal; proxy_pass http://slow\$request_uri; }
  }
  server {
    listen 127.0.0.1:$NGX_SPLIT;
    location / { proxy_pass http://\$canary; }
  }
}
EOF
nginx -p "$WORK/ngx" -c "$WORK/ngx/nginx.conf" & PIDS+=($!)
NGX_MASTER=$!

# --- HAProxy, one thread: weighted servers 90/10 ------------------------------------------------
cat > "$WORK/canary.cfg" <<EOF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend fe
  bind 127.0.0.1:$HAPC
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server legacy 127.0.0.1:$UP weight 90
  server candidate 127.0.0.1:$CAND weight 10
EOF
haproxy -f "$WORK/canary.cfg" -db > "$WORK/canary.log" 2>&1 & PIDS+=($!)
HAP_PID=$!

# --- strangler-gateway, one thread ------------------------------------------------------------
cat > "$WORK/routes.toml" <<TOML
[gateway]
listen = "127.0.0.1:$GW"
admin_listen = "127.0.0.1:$GWA"
admin_token = "bench"
threads = 1

[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:$UP"]
[upstreams.candidate]
endpoints = ["127.0.0.1:$CAND"]
[upstreams.slow]
endpoints = ["127.0.0.1:$SLOW"]

[[routes]]
name = "off"
match = { path = "/off/{id}" }
to = "candidate"
stage = "legacy"

[[routes]]
name = "fast"
match = { path = "/fast/{id}" }
to = "candidate"
stage = "shadow"
[routes.shadow]
sample = 1.0

[[routes]]
name = "slow"
match = { path = "/slow/{id}" }
to = "slow"
stage = "shadow"
[routes.shadow]
sample = 1.0

[[routes]]
name = "canary"
match = { path = "/canary/{id}" }
to = "candidate"
stage = "canary"
weight = 10
TOML
start_gateway "$WORK/routes.toml" gw
for p in $UP $CAND $SLOW $HAPC $NGX_FAST $NGX_SLOW $NGX_SPLIT $GW $GWA; do wait_port "$p"; done
NGX_WORKER=$(nginx_workers "$NGX_MASTER" | cut -d' ' -f1)
METRICS="http://127.0.0.1:$GWA/metrics"
PINNED="not pinned"
if [[ ${PIN:-0} == 1 ]]; then
  (( $(nproc) >= 2 )) || { echo "PIN=1 needs 2 CPUs" >&2; exit 64; }
  nginx_workers "$UP_MASTER" > /dev/null; nginx_workers "$CAND_MASTER" > /dev/null
  pin_cpu 1 "$GW_PID" "$NGX_MASTER" "$HAP_PID"
  pin_cpu 0 "$UP_MASTER" "$CAND_MASTER" "$SLOW_PID"
  wrk() { taskset -c 0 wrk "$@"; }   # wrk_run (lib.sh) and the warm-up call this
  PINNED="pinned: proxies (gateway incl. shadow threads, nginx, canary HAProxy) on CPU 1; wrk, upstream, candidate, slow HAProxy on CPU 0"
fi
echo "$PINNED"
curl -sf -o /dev/null "http://127.0.0.1:$SLOW/x" # the Lua action answers

# A case: the process whose CPU is counted, the URL, and the shadow route it feeds (if any).
ALL_CASES="gw-off gw-shadow-fast nginx-mirror-fast gw-shadow-slow nginx-mirror-slow gw-canary nginx-split haproxy-canary"
CASES=${CASES:-$ALL_CASES}
declare -A PROC URL ROUTE
PROC=([gw-off]=$GW_PID [gw-shadow-fast]=$GW_PID [gw-shadow-slow]=$GW_PID [gw-canary]=$GW_PID
      [nginx-mirror-fast]=$NGX_WORKER [nginx-mirror-slow]=$NGX_WORKER [nginx-split]=$NGX_WORKER
      [haproxy-canary]=$HAP_PID)
URL=([gw-off]="http://127.0.0.1:$GW/off/9" [gw-shadow-fast]="http://127.0.0.1:$GW/fast/9"
     [gw-shadow-slow]="http://127.0.0.1:$GW/slow/9" [gw-canary]="http://127.0.0.1:$GW/canary/9"
     [nginx-mirror-fast]="http://127.0.0.1:$NGX_FAST/fast/9" [nginx-mirror-slow]="http://127.0.0.1:$NGX_SLOW/slow/9"
     [nginx-split]="http://127.0.0.1:$NGX_SPLIT/canary/9" [haproxy-canary]="http://127.0.0.1:$HAPC/canary/9")
ROUTE=([gw-shadow-fast]=fast [gw-shadow-slow]=slow)
REVERSED=$(tr ' ' '\n' <<<"$CASES" | tac | tr '\n' ' ')

for c in $CASES; do   # warm-up (connections, pools, the JIT-free caches)
  wrk -t1 -c"$CONNS" -d1s "${URL[$c]}" > /dev/null
  [[ -n ${ROUTE[$c]:-} ]] && shadow_settled "$METRICS" "${ROUTE[$c]}"
done
declare -A C0 D0
for r in fast slow; do
  C0[$r]=$(metric "$METRICS" strangler_shadow_compared_total "route=\"$r\"")
  D0[$r]=$(metric "$METRICS" strangler_shadow_dropped_total "route=\"$r\"")
done

declare -A RPS P50 P99 UT ST NREQ
for c in $CASES; do RPS[$c]=""; P50[$c]=""; P99[$c]=""; UT[$c]=0; ST[$c]=0; NREQ[$c]=0; done
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order=$CASES; else order=$REVERSED; fi
  for c in $order; do
    pid=${PROC[$c]}
    read -r u0 s0 < <(cpu_ticks "$pid")
    wrk_run "${URL[$c]}"
    # the mirrors still queued belong to this case's CPU
    [[ -n ${ROUTE[$c]:-} ]] && shadow_settled "$METRICS" "${ROUTE[$c]}"
    read -r u1 s1 < <(cpu_ticks "$pid")
    UT[$c]=$((UT[$c] + u1 - u0)); ST[$c]=$((ST[$c] + s1 - s0)); NREQ[$c]=$((NREQ[$c] + RUN_REQS))
    RPS[$c]+="$RUN_RPS "; P50[$c]+="$RUN_P50 "; P99[$c]+="$RUN_P99 "
    printf 'round %d %-18s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  (load %s)\n' "$r" "$c" "$RUN_RPS" "$RUN_P50" "$RUN_P99" "$(loadavg)"
  done
done
LOAD_END=$(loadavg)
declare -A DROP_PCT
for r in fast slow; do
  cmp=$(( $(metric "$METRICS" strangler_shadow_compared_total "route=\"$r\"") - C0[$r] ))
  drp=$(( $(metric "$METRICS" strangler_shadow_dropped_total "route=\"$r\"") - D0[$r] ))
  DROP_PCT[$r]=$(awk -v d="$drp" -v c="$cmp" 'BEGIN{ printf "%.2f", (d+c>0 ? 100*d/(d+c) : 0) }')
  printf 'gateway route %s: %d mirrors compared, %d dropped (%s%%)\n' "$r" "$cmp" "$drp" "${DROP_PCT[$r]}"
done
# nginx mirrors every request; with the fast candidate the gateway drops a mirror only when its
# (niced) shadow runtime is starved of CPU, i.e. when the machine is busy. Past 5% dropped the
# fast comparison no longer measures the same job (the gateway skipped part of it): say so.
LIKE=1
if awk -v d="${DROP_PCT[fast]}" 'BEGIN{ exit !(d > 5) }'; then
  LIKE=0
  echo "NOTE: the gateway dropped ${DROP_PCT[fast]}% of the fast candidate's mirrors (nginx mirrored all):" \
    "shadow_vs_nginx_mirror_* compare different work in this run (shadow_fast_like_for_like=0)"
fi

echo
echo "median of $ROUNDS rounds, wrk -t${WRK_THREADS:-1} -c$CONNS -d${DURATION}s, one worker each, loopback;" \
  "slow candidate = +${SLOW_MS} ms; load average at start $LOAD_START, at end $LOAD_END; $PINNED"
echo "CPU columns: the proxy process's CPU time per request over all rounds (user / kernel, microseconds;" \
  "the gateway's includes its shadow runtime, nginx's includes the mirror subrequests)"
printf '| %-18s | %10s | %8s | %8s | %8s | %8s |\n' case "req/s" "p50 ms" "p99 ms" "user us" "sys us"
printf '|--------------------|-----------:|---------:|---------:|---------:|---------:|\n'
declare -A MR MP99 CPU
for c in $ALL_CASES; do MR[$c]=0; MP99[$c]=0; CPU[$c]=0; done
for c in $CASES; do
  MR[$c]=$(median "${RPS[$c]}"); MP99[$c]=$(median "${P99[$c]}")
  u=$(us_per_req "${UT[$c]}" "${NREQ[$c]}"); s=$(us_per_req "${ST[$c]}" "${NREQ[$c]}"); CPU[$c]=$(add "$u" "$s")
  printf '| %-18s | %10.0f | %8.3f | %8.3f | %8s | %8s |\n' "$c" "${MR[$c]}" "$(median "${P50[$c]}")" "${MP99[$c]}" "$u" "$s"
done
echo
printf '%-34s %8s %8s %8s\n' "" "req/s" "p99" "CPU/req"
row() { printf '%-34s %8s %8s %8s\n' "$1" "$(ratio "${MR[$2]}" "${MR[$3]}")" "$(ratio "${MP99[$2]}" "${MP99[$3]}")" \
  "$(ratio "${CPU[$2]}" "${CPU[$3]}")"; }
row "shadow fast: gateway / nginx mirror" gw-shadow-fast nginx-mirror-fast
row "shadow slow: gateway / nginx mirror" gw-shadow-slow nginx-mirror-slow
row "gateway: shadow slow / shadow off" gw-shadow-slow gw-off
row "gateway: shadow fast / shadow off" gw-shadow-fast gw-off
row "canary: gateway / nginx split" gw-canary nginx-split
row "canary: gateway / haproxy weights" gw-canary haproxy-canary
echo
# --- shadowing at a fixed rate: the latency a client sees below saturation --------------------
# At saturation with wrk's closed loop (CONNS connections, one request in flight each), a
# case's mean latency is CONNS / its throughput (Little's law), so the p99 ratios above are tied
# to the throughput ratios (and on a 2-core VM a saturation p99 moves by 2-5x between rounds of
# the same case): a p99 of 0.2x nginx's would need a mean five times shorter, i.e. about five
# times nginx's throughput. What a user feels is the latency at the load they run. Here two
# pairs of cases are driven at one request rate each, with h2load --h1 --rps (a request rate per
# keep-alive connection, RATE_CLIENTS of them, their requests spread out rather than sent in
# bursts: lib.sh's h2load_rate_run, as scale-bench.sh's fixed-rate part), rounds alternating;
# p50/p99 from h2load's per-request log. FIXED_RATE=0 skips both.
# - fast candidate: gw-shadow-fast vs nginx-mirror-fast at half nginx mirror's maximum;
# - slow candidate: gw-shadow-slow vs gw-off at half the gateway's shadow-off maximum (a normal
#   load for the gateway): does a candidate that answers 50 ms late move the primary's latency?
FR_CLIENTS=${RATE_CLIENTS:-128}
H2LOAD=(h2load); [[ ${PIN:-0} == 1 ]] && H2LOAD=(taskset -c 0 h2load)
# fixed_rate_pair RATE A B: both cases at RATE req/s over ROUNDS alternating rounds; prints each
# run and a table; sets FP99_A FP99_B (median p99s) and HELD (0 when a round missed the rate by
# more than 5%)
fixed_rate_pair() {
  local fr=$1 a=$2 b=$3 r c order low
  declare -A fp50 fp99 flow
  for c in "$a" "$b"; do fp50[$c]=""; fp99[$c]=""; flow[$c]=""; done
  for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then order="$a $b"; else order="$b $a"; fi
    for c in $order; do
      h2load_rate_run "${URL[$c]}" "$fr" "$FR_CLIENTS" "$WORK/rate-$c.log"
      [[ -n ${ROUTE[$c]:-} ]] && shadow_settled "$METRICS" "${ROUTE[$c]}"
      fp50[$c]+="$R_P50 "; fp99[$c]+="$R_P99 "; flow[$c]+="$R_RPS "
      printf 'round %d %-18s target %6d req/s, achieved %6d  p50 %7.3f ms  p99 %7.3f ms  (load %s)\n' "$r" "$c" "$fr" "$R_RPS" "$R_P50" "$R_P99" "$(loadavg)"
    done
  done
  HELD=1
  for c in "$a" "$b"; do
    low=$(tr ' ' '\n' <<<"${flow[$c]}" | grep -v '^$' | sort -n | head -1)
    awk -v x="$low" -v t="$fr" 'BEGIN{ exit !(x >= 0.95 * t) }' || HELD=0
    printf '| %-18s | %8d req/s (slowest round) | p50 %7.3f ms | p99 %7.3f ms |\n' "$c" "$low" "$(median "${fp50[$c]}")" "$(median "${fp99[$c]}")"
  done
  (( HELD )) || echo "a round missed the rate by more than 5%: this fixed-rate ratio compares different loads"
  FP99_A=$(median "${fp99[$a]}"); FP99_B=$(median "${fp99[$b]}")
}
FR_KEYS="shadow_fixed_rate_rps=0 shadow_fixed_rate_held=0 shadow_vs_nginx_mirror_p99_fixed_rate=0"
if [[ ${FIXED_RATE:-1} == 1 && " $CASES " == *" gw-shadow-fast "* && " $CASES " == *" nginx-mirror-fast "* ]]; then
  FR=$(awk -v r="${MR[nginx-mirror-fast]}" 'BEGIN{ printf "%d", r / 2 }')
  echo; echo "== shadowing at a fixed rate of $FR req/s (half nginx mirror's maximum), $FR_CLIENTS connections"
  fixed_rate_pair "$FR" gw-shadow-fast nginx-mirror-fast
  (( HELD )) || echo "(shadow_fixed_rate_held=0)"
  FR_KEYS="shadow_fixed_rate_rps=$FR shadow_fixed_rate_held=$HELD shadow_vs_nginx_mirror_p99_fixed_rate=$(ratio "$FP99_A" "$FP99_B")"
fi
SR_KEYS="shadow_slow_fixed_rate_rps=0 shadow_slow_fixed_rate_held=0 shadow_slow_candidate_p99_ratio_fixed_rate=0"
if [[ ${FIXED_RATE:-1} == 1 && " $CASES " == *" gw-shadow-slow "* && " $CASES " == *" gw-off "* ]]; then
  SR=$(awk -v r="${MR[gw-off]}" 'BEGIN{ printf "%d", r / 2 }')
  echo; echo "== the slow candidate at a fixed rate of $SR req/s (half the gateway's shadow-off maximum), $FR_CLIENTS connections"
  fixed_rate_pair "$SR" gw-shadow-slow gw-off
  (( HELD )) || echo "(shadow_slow_fixed_rate_held=0)"
  SR_KEYS="shadow_slow_fixed_rate_rps=$SR shadow_slow_fixed_rate_held=$HELD shadow_slow_candidate_p99_ratio_fixed_rate=$(ratio "$FP99_A" "$FP99_B")"
fi

echo "RESULT shadow_vs_nginx_mirror_rps=$(ratio "${MR[gw-shadow-fast]}" "${MR[nginx-mirror-fast]}")" \
  "shadow_vs_nginx_mirror_p99=$(ratio "${MP99[gw-shadow-fast]}" "${MP99[nginx-mirror-fast]}")" \
  "shadow_vs_nginx_mirror_cpu=$(ratio "${CPU[gw-shadow-fast]}" "${CPU[nginx-mirror-fast]}")" \
  "shadow_slow_vs_nginx_mirror_rps=$(ratio "${MR[gw-shadow-slow]}" "${MR[nginx-mirror-slow]}")" \
  "shadow_slow_candidate_p99_ratio=$(ratio "${MP99[gw-shadow-slow]}" "${MP99[gw-off]}")" \
  "mirrors_dropped_pct_fast=${DROP_PCT[fast]} mirrors_dropped_pct_slow=${DROP_PCT[slow]} shadow_fast_like_for_like=$LIKE" \
  "canary_vs_nginx_split_rps=$(ratio "${MR[gw-canary]}" "${MR[nginx-split]}")" \
  "canary_vs_nginx_split_p99=$(ratio "${MP99[gw-canary]}" "${MP99[nginx-split]}")" \
  "canary_vs_haproxy_rps=$(ratio "${MR[gw-canary]}" "${MR[haproxy-canary]}")" \
  "canary_vs_haproxy_p99=$(ratio "${MP99[gw-canary]}" "${MP99[haproxy-canary]}")" \
  "$FR_KEYS $SR_KEYS pinned=${PIN:-0} load1=$(loadavg | cut -d' ' -f1)"
