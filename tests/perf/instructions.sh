#!/usr/bin/env bash
# User-space instructions per proxied request, gateway vs a minimal pingora-proxy, under
# callgrind: deterministic where req/s and CPU time move with the machine's load.
#
#   tests/perf/instructions.sh [SECONDS] [CONNS]
#
# Both proxies are built with the `release-gw` profile (what the gateway ships with) and run
# one worker thread in front of the same nginx upstream. Each is started under
# `valgrind --tool=callgrind --instr-atstart=no`, warmed up, then instrumented only while
# `wrk -t1 -c CONNS -d SECONDS` runs; the dump's total Ir divided by the requests wrk completed is
# the figure. The gateway serves the gateway benchmark's routes.toml shape: 1,000 routes
# (exact, parameter and prefix paths), request ids, traceparent, X-Forwarded-*, metrics; the
# request goes to an extracted route with a path parameter. `callgrind_annotate` of the dumps
# (kept in $KEEP when set) shows where the instructions go.
#
# Env: PROFILE (default release-gw), GATEWAY_BIN / MINIMAL_BIN (measure these binaries, no
# build), KEEP=DIR (keep the dumps), CACHESIM=1 (also simulate the caches and branch predictor:
# a second table of L1 instruction/data misses and mispredicted branches per request on the
# request path; slower).
#
# Two figures per proxy: the whole process (background threads included: their share per
# request depends on how fast callgrind lets the run go, i.e. on the machine's load) and the
# request path (the listening service's connection tasks: load-independent).
#
# Ends with:
#   RESULT gateway_ir_per_req=... minimal_ir_per_req=... gateway_vs_minimal_ir=...
#          gateway_path_ir_per_req=... minimal_path_ir_per_req=... gateway_vs_minimal_path_ir=...
set -euo pipefail

SECS=${1:-4}
CONNS=${2:-4}
(( SECS <= 10 )) || { echo "keep the instrumented run <= 10 s" >&2; exit 64; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/perf/lib.sh"
ensure_tools nginx wrk curl valgrind callgrind_control
# PROFILE=release: both built with the plain release profile (incremental, minutes instead of the
# fat-LTO build's half hour; the ratio is then not the shipped binary's, compare like with like)
PROFILE=${PROFILE:-release-gw}
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
BIN=${GATEWAY_BIN:-$OUT/strangler-gateway}
MIN_BIN=${MINIMAL_BIN:-$OUT/examples/minimal_proxy}
if [[ -z ${GATEWAY_BIN:-} || -z ${MINIMAL_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q --profile "$PROFILE" -p strangler-gateway --bin strangler-gateway --example minimal_proxy)
fi
bench_setup gw-instr
UP=$(port); GW=$(port); GWA=$(port); MIN=$(port)
TARGET=/api/svc777/items/9
start_json_upstream "$WORK/up" "$UP"
wait_port "$UP"

{
  printf '[gateway]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\nthreads = 1\n\n' "$GW" "$GWA"
  printf '[defaults]\nupstream = "legacy"\n[upstreams.legacy]\nendpoints = ["127.0.0.1:%s"]\n' "$UP"
  printf '[upstreams.svc]\nendpoints = ["127.0.0.1:%s"]\n' "$UP"
  for i in $(seq 0 999); do
    case $((i % 3)) in
      0) m="{ path = \"/api/svc$i/items/{id}\" }" ;;
      1) m="{ path = \"/api/svc$i/items/{id}\" }" ;;
      2) m="{ path = \"/api/svc$i/**\" }" ;;
    esac
    printf '[[routes]]\nname = "r%d"\nmatch = %s\nto = "svc"\nstage = "extracted"\n' "$i" "$m"
    printf '[[routes]]\nname = "x%d"\nmatch = { path = "/api/exact%d" }\nstage = "legacy"\n' "$i" "$i"
  done
} > "$WORK/routes.toml"
"$BIN" check "$WORK/routes.toml" > /dev/null

# measure NAME PORT CMD...: runs CMD under callgrind, prints "Ir requests"
measure() {
  local name=$1 p=$2; shift 2
  local out=$WORK/callgrind.$name
  callgrind_start "$out" "$@"
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$p$TARGET" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$p$TARGET" || { echo "$name never answered" >&2; cat "$out.log" >&2; exit 1; }
  DURATION=2 wrk_run "http://127.0.0.1:$p$TARGET" > /dev/null # warm-up, not counted
  callgrind_control -i on "$CG_PID" > /dev/null
  DURATION=$SECS wrk_run "http://127.0.0.1:$p$TARGET" >&2
  callgrind_control -i off "$CG_PID" > /dev/null
  kill "$CG_PID"; wait "$CG_PID" 2>/dev/null || true
  [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$out"* "$KEEP/"
  # the connection tasks alone (Pingora's listening service and everything it calls): the request
  # path without the background threads, whose share per request grows as callgrind slows the
  # run down (the dashboard's 2 s sampler over 2,000 routes is ~7M instructions a tick)
  # (with CACHESIM: Ir, then I1 misses, D1 read + write misses, mispredicted branches)
  local path show=()
  [[ -n ${CACHESIM:-} ]] && show=(--show=Ir,I1mr,D1mr,D1mw,Bcm,Bim)
  path=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "${show[@]}" "$out" 2>/dev/null \
    | awk '/run_endpoint::\{\{closure\}\}::\{\{closure\}\} \[/ {
             # the counts, in the order shown, each followed by its "(pct%)"
             n = 0
             for (i = 1; i <= NF && $i ~ /^[0-9,(][0-9,.%)]*$/; i++)
               if ($i !~ /^\(/) { v = $i; gsub(",", "", v); c[++n] = v + 0 }
             if (c[1] > ir) { ir = c[1]; i1 = c[2]; d1 = c[3] + c[4]; bm = c[5] + c[6] }
           } END { print ir + 0, i1 + 0, d1 + 0, bm + 0 }')
  echo "$(awk '/^(summary|totals):/ {s += $2} END {print s}' "$out"*) $RUN_REQS $path"
}

LOAD_START=$(loadavg)
read -r GW_IR GW_REQS GW_PATH GW_I1 GW_D1 GW_BM < <(measure gateway "$GW" "$BIN" run --config "$WORK/routes.toml" --no-watch \
  --pid-file "$WORK/gw.pid" --upgrade-sock "$WORK/gw.sock")
read -r MIN_IR MIN_REQS MIN_PATH MIN_I1 MIN_D1 MIN_BM < <(measure minimal "$MIN" "$MIN_BIN" "127.0.0.1:$MIN" "127.0.0.1:$UP")
per() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%d", a/b}'; }
GW_PER=$(per "$GW_IR" "$GW_REQS"); MIN_PER=$(per "$MIN_IR" "$MIN_REQS")
GW_PATH_PER=$(per "$GW_PATH" "$GW_REQS"); MIN_PATH_PER=$(per "$MIN_PATH" "$MIN_REQS")

printf '\n| proxy (%s, 1 thread) | requests | Ir / request | request path Ir / request |\n|---|---:|---:|---:|\n' "$PROFILE"
printf '| gateway, 1,000 routes | %s | %s | %s |\n| minimal pingora-proxy | %s | %s | %s |\n' \
  "$GW_REQS" "$GW_PER" "$GW_PATH_PER" "$MIN_REQS" "$MIN_PER" "$MIN_PATH_PER"
if [[ -n ${CACHESIM:-} ]]; then
  printf '\n| request path, per request | Ir | I1 misses | D1 misses | mispredicted branches |\n|---|---:|---:|---:|---:|\n'
  printf '| gateway | %s | %s | %s | %s |\n' "$GW_PATH_PER" "$(per "$GW_I1" "$GW_REQS")" "$(per "$GW_D1" "$GW_REQS")" "$(per "$GW_BM" "$GW_REQS")"
  printf '| minimal pingora-proxy | %s | %s | %s | %s |\n' "$MIN_PATH_PER" "$(per "$MIN_I1" "$MIN_REQS")" \
    "$(per "$MIN_D1" "$MIN_REQS")" "$(per "$MIN_BM" "$MIN_REQS")"
  printf '| ratio | %s | %s | %s | %s |\n' "$(ratio "$GW_PATH_PER" "$MIN_PATH_PER")" \
    "$(ratio "$(per "$GW_I1" "$GW_REQS")" "$(per "$MIN_I1" "$MIN_REQS")")" \
    "$(ratio "$(per "$GW_D1" "$GW_REQS")" "$(per "$MIN_D1" "$MIN_REQS")")" \
    "$(ratio "$(per "$GW_BM" "$GW_REQS")" "$(per "$MIN_BM" "$MIN_REQS")")"
fi
echo "load average: $LOAD_START -> $(loadavg) (instruction counts do not depend on it)"
echo "RESULT gateway_ir_per_req=$GW_PER minimal_ir_per_req=$MIN_PER gateway_vs_minimal_ir=$(ratio "$GW_PER" "$MIN_PER")" \
  "gateway_path_ir_per_req=$GW_PATH_PER minimal_path_ir_per_req=$MIN_PATH_PER" \
  "gateway_vs_minimal_path_ir=$(ratio "$GW_PATH_PER" "$MIN_PATH_PER")"
