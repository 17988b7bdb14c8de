#!/usr/bin/env bash
# How the gateway holds up as a deployment grows (not a test). Five parts, each bounded in time:
#
# routes  Throughput with 10, 1,000 and 10,000 routes (a quarter each exact paths, /{param}
#         paths, /** prefixes, and {param} paths under a host name), three gateways with one
#         thread each driven by the same wrk run in alternating rounds; the request goes to the
#         last host route of each table (so the host lookup and the path match both run).
# reload  `strangler-gateway check` of the 10,000-route file (the whole process: start, parse,
#         validate, compile, exit; median of 5, next to the same for the 10-route file), and
#         POST /admin/reload of that file (answered once the new table is swapped in; median of
#         RELOADS): on the idle gateway with wall time and the gateway's CPU time (all threads'
#         schedstat over the request: independent of the machine's load), once for an edit of a
#         route's stage (the router is shared with the previous table) and once for an edit of a
#         route's path (the router is rebuilt); then stage edits while wrk drives the gateway: no
#         failed request allowed.
# conns   10,000 idle keep-alive client connections (each sent one request, then held open) to
#         the gateway, to the minimal Pingora proxy (gateway/examples/minimal_proxy.rs: Pingora's
#         own cost per connection, without the gateway's edge guard, callbacks and metrics; with
#         the gateway's listener settings, and as "pingora-64k" with Pingora's default 64 KiB L4
#         read buffer per connection) and to nginx: RSS growth / connections = memory per idle
#         connection.
# threads threads = 2 versus threads = 1, and nginx with 2 workers versus 1 (wrk -t2 for all
#         four): the ratio of the two scaling factors. The load generator and the upstream share
#         the machine's cores: on a 2-core machine neither can double.
# rate    Latency at a fixed request rate of half nginx's maximum (the "threads" part's one-worker
#         nginx rate): h2load --h1 --rps (a request rate per client over RATE_CLIENTS keep-alive
#         connections, connected over one send interval with -r so that the requests are spread
#         out rather than sent in bursts of RATE_CLIENTS), gateway versus nginx: p50 / p99 /
#         p99.9 from h2load's per-request log, the achieved rate printed beside the target. When
#         either side missed the target by more than 5% in any round, no ratio is reported at
#         that rate; if nginx held it and the gateway did not, the highest rate the gateway holds
#         is searched (from 90% of what it reached, -15% a step) and both are run at that rate
#         (fixed_rate_common_*). Then both, and the minimal Pingora proxy, at half of the
#         gateway's own maximum (fixed_rate_half_gw_*: a normal load for the gateway;
#         RATE_HALF_GW=0 skips it).
#         RATE_PIN=1 pins the proxies to CPU 1, h2load and the upstream to CPU 0.
#
# The last line is machine-readable:
#   RESULT routes_1k_vs_10_rps=... routes_10k_vs_10_rps=... check_10k_ms=... check_10_ms=...
#          reload_10k_ms=... reload_failed_requests=... reload_10k_idle_ms=... reload_10k_cpu_ms=...
#          reload_10k_match_edit_ms=... reload_10k_match_edit_cpu_ms=...
#          idle_conn_kb_gateway=... idle_conn_kb_pingora=... idle_conn_kb_pingora_64k=...
#          idle_conn_kb_nginx=...
#          idle_conn_mem_vs_nginx=... threads2_scaling_gateway=... threads2_scaling_nginx=...
#          threads2_scaling_vs_nginx=... fixed_rate_rps=... fixed_rate_held=0|1
#          fixed_rate_p99_vs_nginx=...|missed fixed_rate_p999_vs_nginx=...|missed
#          [fixed_rate_common_rps=...|none fixed_rate_common_held=0|1
#           fixed_rate_common_p99_vs_nginx=...|missed fixed_rate_common_p999_vs_nginx=...]
#          [fixed_rate_half_gw_rps=... fixed_rate_half_gw_held=0|1
#           fixed_rate_half_gw_p99_vs_nginx=...|missed fixed_rate_half_gw_p999_vs_nginx=...
#           fixed_rate_half_gw_p99_vs_pingora=...|missed] load1=...
# Targets (issue 16): routes_10k_vs_10_rps within 0.95-1.05, check_10k_ms and reload_10k_ms
# < 100, reload_failed_requests = 0, fixed_rate_p99_vs_nginx <= 1.2.
#
# Usage: tests/perf/scale-bench.sh [DURATION_S=5] [CONNECTIONS=32] [ROUNDS=2]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, built if missing)
#        MINIMAL_BIN (the conns part's minimal Pingora proxy; default: examples/minimal_proxy
#        next to GATEWAY_BIN, built with the same profile if missing),
#        PARTS (default "routes reload conns threads rate"), IDLE_CONNS (default 10000),
#        RELOADS (default 5), WRK_THREADS (default 1; the threads part uses 2),
#        RATE_CLIENTS (default 128: connections of the fixed-rate part), RATE_PIN (default 0),
#        RATE_HALF_GW (default 1: also both proxies at half the gateway's own maximum)
set -euo pipefail

DURATION=${1:-5}
CONNS=${2:-32}
ROUNDS=${3:-2}
PARTS=${PARTS:-routes reload conns threads rate}
IDLE_CONNS=${IDLE_CONNS:-10000}
RELOADS=${RELOADS:-5}
(( DURATION <= 10 )) || { echo "keep each wrk run <= 10 s" >&2; exit 64; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/perf/lib.sh
source "$ROOT/tests/perf/lib.sh"
ensure_tools nginx wrk curl python3 h2load
BIN=$(gateway_bin "$ROOT")
# 10,000 idle connections: the client process and the proxy each hold one descriptor per
# connection (plus the proxy's upstream sockets); the limit is per process
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) > IDLE_CONNS + 1000 )) || { echo "ulimit -n $(ulimit -n) is too low for $IDLE_CONNS connections" >&2; exit 69; }
bench_setup scale-bench
LOAD_START=$(loadavg)
UP=$(port)
start_json_upstream "$WORK/up" "$UP"; UP_MASTER=${PIDS[-1]}
RESULT=""

# last_host_route N: the index of the last host route of an N-route table
last_host_route() { echo $(( ($1 - 4) / 4 * 4 + 3 )); }

# wrk_failures OUTPUT: socket errors + non-2xx answers reported by wrk
wrk_failures() {
  awk '/Socket errors/ { gsub(",", ""); s += $4 + $6 + $8 + $10 } /Non-2xx/ { s += $NF } END { print s + 0 }' <<<"$1"
}


# measure CASES...: ROUNDS alternating rounds of wrk over the cases (URL[c], HOST[c], PROC[c]);
# sets MR (median req/s), MP99, CPU (user + kernel us per request).
declare -A URL HOST PROC MR MP99 CPU
measure() {
  local cases="$*" order r c u0 s0 u1 s1
  local reversed; reversed=$(tr ' ' '\n' <<<"$cases" | tac | tr '\n' ' ')
  declare -A rps p99 ut st nreq
  for c in $cases; do
    rps[$c]=""; p99[$c]=""; ut[$c]=0; st[$c]=0; nreq[$c]=0
    WRK_HEADER=${HOST[$c]:+Host: ${HOST[$c]}} DURATION=1 wrk_run "${URL[$c]}"   # warm-up
  done
  for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then order=$cases; else order=$reversed; fi
    for c in $order; do
      read -r u0 s0 < <(cpu_ticks ${PROC[$c]})
      WRK_HEADER=${HOST[$c]:+Host: ${HOST[$c]}} wrk_run "${URL[$c]}"
      read -r u1 s1 < <(cpu_ticks ${PROC[$c]})
      ut[$c]=$((ut[$c] + u1 - u0)); st[$c]=$((st[$c] + s1 - s0)); nreq[$c]=$((nreq[$c] + RUN_REQS))
      rps[$c]+="$RUN_RPS "; p99[$c]+="$RUN_P99 "
      printf 'round %d %-16s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' "$r" "$c" "$RUN_RPS" "$RUN_P50" "$RUN_P99"
    done
  done
  for c in $cases; do
    MR[$c]=$(median "${rps[$c]}"); MP99[$c]=$(median "${p99[$c]}")
    CPU[$c]=$(add "$(us_per_req "${ut[$c]}" "${nreq[$c]}")" "$(us_per_req "${st[$c]}" "${nreq[$c]}")")
  done
}
table() {
  printf '| %-16s | %10s | %8s | %10s |\n' case "req/s" "p99 ms" "CPU us/req"
  printf '|------------------|-----------:|---------:|-----------:|\n'
  for c in "$@"; do printf '| %-16s | %10.0f | %8.3f | %10s |\n' "$c" "${MR[$c]}" "${MP99[$c]}" "${CPU[$c]}"; done
}

# --- routes ------------------------------------------------------------------------------------
declare -A GWP GWAP GWPID
for n in 10 1000 10000; do
  GWP[$n]=$(port); GWAP[$n]=$(port)
  gen_routes "$n" "$WORK/routes-$n.toml" "${GWP[$n]}" "${GWAP[$n]}" 1
done
if part routes || part reload || part rate; then
  for n in 10 1000 10000; do
    start_gateway "$WORK/routes-$n.toml" "gw-$n"; GWPID[$n]=$GW_PID
  done
  for n in 10 1000 10000; do wait_port "${GWP[$n]}"; wait_port "${GWAP[$n]}"; done
fi
if part routes; then
  echo "== routes: one gateway thread, request to the last host route"
  for n in 10 1000 10000; do
    k=$(last_host_route "$n")
    URL[gw-$n]="http://127.0.0.1:${GWP[$n]}/api/s$k/items/9"; HOST[gw-$n]="h$k.example.com"; PROC[gw-$n]=${GWPID[$n]}
  done
  measure gw-10 gw-1000 gw-10000
  echo; table gw-10 gw-1000 gw-10000
  RESULT+=" routes_1k_vs_10_rps=$(ratio "${MR[gw-1000]}" "${MR[gw-10]}") routes_10k_vs_10_rps=$(ratio "${MR[gw-10000]}" "${MR[gw-10]}")"
  RESULT+=" routes_10k_vs_10_cpu=$(ratio "${CPU[gw-10000]}" "${CPU[gw-10]}")"
  echo
fi

# --- reload ------------------------------------------------------------------------------------
if part reload; then
  echo "== check and reload of the 10,000-route file ($(wc -c < "$WORK/routes-10000.toml") bytes)"
  time_ms() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000000 )); }
  declare -A CHK
  for n in 10 10000; do
    CHK[$n]=""
    for _ in 1 2 3 4 5; do CHK[$n]+="$(time_ms "$BIN" check "$WORK/routes-$n.toml") "; done
    CHK[$n]=$(median "${CHK[$n]}")
    printf 'check, %5d routes: %s ms (median of 5 runs, process start to exit)\n' "$n" "${CHK[$n]}"
  done
  # Each reload changes the file the way an operator does. "stage": route r1 flips between
  # extracted and legacy (every match stays, so the router is shared with the previous table).
  # "match": route r0's path flips between two values (the router is rebuilt).
  F=$WORK/routes-10000.toml
  cp "$F" "$WORK/reload-a.toml"
  sed '0,/stage = "extracted"/s//stage = "legacy"/' "$F" > "$WORK/reload-stage.toml"
  sed '0,/"\/api\/s0\/items"/s//"\/api\/s0\/items-v2"/' "$F" > "$WORK/reload-match.toml"
  cmp -s "$F" "$WORK/reload-stage.toml" && { echo "the stage edit changed nothing"; exit 1; }
  cmp -s "$F" "$WORK/reload-match.toml" && { echo "the match edit changed nothing"; exit 1; }
  # reload_once KIND I: writes the I-th variant of KIND over the file, POSTs /admin/reload and sets
  # RL_MS (until answered) and RL_CPU_MS (the gateway's CPU, all threads, over the same window)
  reload_once() {
    local src=$WORK/reload-a.toml out c0 c1
    (( $2 % 2 )) && src=$WORK/reload-$1.toml
    cp "$src" "$F"
    c0=$(cpu_ns "${GWPID[10000]}")
    out=$(curl -sf -w ' %{time_total}' -X POST -H "authorization: Bearer bench" \
      "http://127.0.0.1:${GWAP[10000]}/admin/reload")
    c1=$(cpu_ns "${GWPID[10000]}")
    grep -q '"reloaded":true' <<<"$out" || { echo "reload $2 ($1) failed: $out"; exit 1; }
    RL_MS=$(awk '{ printf "%.1f", $NF * 1000 }' <<<"$out")
    RL_CPU_MS=$(awk -v a="$c0" -v b="$c1" 'BEGIN{ printf "%.1f", (b - a) / 1e6 }')
  }
  declare -A RLW RLC
  for kind in stage match; do
    RLW[$kind]=""; RLC[$kind]=""
    for i in $(seq 1 "$RELOADS"); do
      reload_once "$kind" "$i"; RLW[$kind]+="$RL_MS "; RLC[$kind]+="$RL_CPU_MS "
      sleep 0.5
    done
    printf 'reload of an idle gateway, %-5s edit: %s ms (median %s ms), gateway CPU %s ms (median %s ms)\n' \
      "$kind" "${RLW[$kind]}" "$(median "${RLW[$kind]}")" "${RLC[$kind]}" "$(median "${RLC[$kind]}")"
  done
  reload_once stage 2   # back to the first file (untimed), so the first reload below is a stage edit
  # reloads (stage edits) while wrk drives the 10,000-route gateway
  k=$(last_host_route 10000)
  wrk -t1 -c"$CONNS" -d"$((RELOADS + 3))s" -H "Host: h$k.example.com" \
    "http://127.0.0.1:${GWP[10000]}/api/s$k/items/9" > "$WORK/reload-wrk.txt" & WRK_PID=$!
  sleep 1   # let wrk reach full load before the first reload
  RL=""
  for i in $(seq 1 "$RELOADS"); do
    reload_once stage "$i"; RL+="$RL_MS "
    sleep 0.5
  done
  wait "$WRK_PID"
  FAILED=$(wrk_failures "$(cat "$WORK/reload-wrk.txt")")
  RELOAD_MS=$(median "$RL")
  echo "reload under load, 10,000 routes, stage edit: $RL ms (median $RELOAD_MS ms; POST /admin/reload until answered; $(loadavg))"
  echo "requests during the reloads: $(awk '/requests in/ {print $1}' "$WORK/reload-wrk.txt"), failed: $FAILED"
  echo
  printf '| %-34s | %12s | %16s |\n' "reload, 10,000 routes" "wall ms" "gateway CPU ms"
  printf '|------------------------------------|-------------:|-----------------:|\n'
  printf '| %-34s | %12s | %16s |\n' "idle, stage edit (router shared)" "$(median "${RLW[stage]}")" "$(median "${RLC[stage]}")"
  printf '| %-34s | %12s | %16s |\n' "idle, match edit (router rebuilt)" "$(median "${RLW[match]}")" "$(median "${RLC[match]}")"
  printf '| %-34s | %12s | %16s |\n' "under wrk load, stage edit" "$RELOAD_MS" "-"
  RESULT+=" check_10k_ms=${CHK[10000]} check_10_ms=${CHK[10]} reload_10k_ms=$RELOAD_MS reload_failed_requests=$FAILED"
  RESULT+=" reload_10k_idle_ms=$(median "${RLW[stage]}") reload_10k_cpu_ms=$(median "${RLC[stage]}")"
  RESULT+=" reload_10k_match_edit_ms=$(median "${RLW[match]}") reload_10k_match_edit_cpu_ms=$(median "${RLC[match]}")"
  echo
fi

# --- conns -------------------------------------------------------------------------------------
if part conns; then
  echo "== $IDLE_CONNS idle keep-alive connections"
  NGXI=$(port)
  start_nginx_proxy "$WORK/ngx-idle" "$NGXI" 1
  IDLE_MASTER=$NGX_MASTER
  GWI=$(port); GWIA=$(port)
  # every connection comes from 127.0.0.1: no per-client cap (default 512)
  gen_routes 10 "$WORK/routes-idle.toml" "$GWI" "$GWIA" 1 "max_connections_per_client = 0"
  start_gateway "$WORK/routes-idle.toml" gw-idle; GWI_PID=$GW_PID
  MIN_BIN=${MINIMAL_BIN:-$(dirname "$BIN")/examples/minimal_proxy}
  if [[ ! -x $MIN_BIN ]]; then
    # the same profile as the gateway binary (target/<profile>/strangler-gateway)
    (cd "$ROOT" && cargo build --profile "$(basename "$(dirname "$BIN")")" -p strangler-gateway --example minimal_proxy >&2)
  fi
  MINI=$(port); MINI64=$(port)
  "$MIN_BIN" "127.0.0.1:$MINI" "127.0.0.1:$UP" > "$WORK/minimal-idle.log" 2>&1 & PIDS+=($!); MINI_PID=$!
  FLOOR_L4_READ_BUFFER=65536 "$MIN_BIN" "127.0.0.1:$MINI64" "127.0.0.1:$UP" > "$WORK/minimal64-idle.log" 2>&1 &
  PIDS+=($!); MINI64_PID=$!
  wait_port "$NGXI"; wait_port "$GWI"; wait_port "$MINI"; wait_port "$MINI64"
  IDLE_WORKER=$(nginx_workers "$IDLE_MASTER" | cut -d' ' -f1)
  cat > "$WORK/idle.py" <<'PY'
# Opens N keep-alive connections to 127.0.0.1:PORT, sends one GET on each and reads the answer,
# prints "held", then holds them until stdin closes.
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
REQ = b"GET /api/s1/items/9 HTTP/1.1\r\nHost: bench\r\n\r\n"
async def one(sem):
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(REQ)
        head = await r.readuntil(b"\r\n\r\n")
        length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        if not head.startswith(b"HTTP/1.1 200") or not length:
            raise SystemExit(f"unexpected answer: {head[:80]!r}")
        await r.readexactly(length[0])
        return w
async def main():
    sem = asyncio.Semaphore(500)
    conns = await asyncio.wait_for(asyncio.gather(*(one(sem) for _ in range(n))), 120)
    print("held", len(conns), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
PY
  declare -A IDLE_KB
  for who in gateway pingora pingora-64k nginx; do
    case $who in
      gateway) p=$GWI; pid=$GWI_PID ;;
      pingora) p=$MINI; pid=$MINI_PID ;;
      pingora-64k) p=$MINI64; pid=$MINI64_PID ;;
      nginx) p=$NGXI; pid=$IDLE_WORKER ;;
    esac
    wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$p/api/s1/items/9" > /dev/null   # warm the pools
    before=$(rss_kb "$pid")
    coproc IDLE { timeout 180 python3 "$WORK/idle.py" "$p" "$IDLE_CONNS"; }
    read -r held n <&"${IDLE[0]}" || { echo "could not hold $IDLE_CONNS connections to $who"; exit 1; }
    sleep 1   # let the allocator settle before reading RSS
    after=$(rss_kb "$pid")
    exec {IDLE[1]}>&-; wait "$IDLE_PID" || true
    IDLE_KB[$who]=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN{ printf "%.2f", (a-b)/n }')
    printf '%-11s RSS %7d KiB -> %7d KiB with %s %s connections: %s KiB per idle connection\n' \
      "$who" "$before" "$after" "$n" "$held" "${IDLE_KB[$who]}"
  done
  RESULT+=" idle_conn_kb_gateway=${IDLE_KB[gateway]} idle_conn_kb_pingora=${IDLE_KB[pingora]}"
  RESULT+=" idle_conn_kb_pingora_64k=${IDLE_KB[pingora-64k]} idle_conn_kb_nginx=${IDLE_KB[nginx]}"
  RESULT+=" idle_conn_mem_vs_nginx=$(ratio "${IDLE_KB[gateway]}" "${IDLE_KB[nginx]}")"
  echo
fi

# --- threads -----------------------------------------------------------------------------------
NGX1=""
if part threads || part rate; then
  NGX1=$(port); start_nginx_proxy "$WORK/ngx1" "$NGX1" 1; NGX1_MASTER=$NGX_MASTER
  wait_port "$NGX1"
  URL[nginx-1]="http://127.0.0.1:$NGX1/api/s1/items/9"; PROC[nginx-1]=$(nginx_workers "$NGX1_MASTER" | cut -d' ' -f1)
fi
if part threads; then
  echo "== threads = 2 vs 1, nginx 2 workers vs 1 (wrk -t2; everything shares the machine's $(nproc) cores)"
  NGX2=$(port); start_nginx_proxy "$WORK/ngx2" "$NGX2" 2; NGX2_MASTER=$NGX_MASTER
  GW2=$(port); GW2A=$(port); gen_routes 1000 "$WORK/routes-t2.toml" "$GW2" "$GW2A" 2
  start_gateway "$WORK/routes-t2.toml" gw-t2; GW2_PID=$GW_PID
  GW1=$(port); GW1A=$(port); gen_routes 1000 "$WORK/routes-t1.toml" "$GW1" "$GW1A" 1
  start_gateway "$WORK/routes-t1.toml" gw-t1; GW1_PID=$GW_PID
  for p in $NGX2 $GW2 $GW1; do wait_port "$p"; done
  URL[nginx-2]="http://127.0.0.1:$NGX2/api/s1/items/9"
  URL[gateway-1]="http://127.0.0.1:$GW1/api/s1/items/9"; PROC[gateway-1]=$GW1_PID
  URL[gateway-2]="http://127.0.0.1:$GW2/api/s1/items/9"; PROC[gateway-2]=$GW2_PID
  # nginx's CPU is its workers' (the master does nothing per request)
  PROC[nginx-2]=$(nginx_workers "$NGX2_MASTER")
  WRK_THREADS=2 measure nginx-1 nginx-2 gateway-1 gateway-2
  echo; table nginx-1 nginx-2 gateway-1 gateway-2
  SG=$(ratio "${MR[gateway-2]}" "${MR[gateway-1]}"); SN=$(ratio "${MR[nginx-2]}" "${MR[nginx-1]}")
  echo "scaling factor (2 over 1): gateway $SG, nginx $SN"
  RESULT+=" threads2_scaling_gateway=$SG threads2_scaling_nginx=$SN threads2_scaling_vs_nginx=$(ratio "$SG" "$SN")"
  echo
fi

# --- rate --------------------------------------------------------------------------------------
if part rate; then
  echo "== latency at a fixed rate of half nginx's maximum (one worker / one thread, 1,000 routes)"
  # only the 1,000-route gateway takes part: the others (routes and threads parts) and the
  # two-worker nginx stop, so that they do not share the machine during the latency runs
  for p in ${GWPID[10]:-} ${GWPID[10000]:-} ${GW1_PID:-} ${GW2_PID:-} ${NGX2_MASTER:-}; do kill "$p" 2>/dev/null || true; done
  if [[ -z ${MR[nginx-1]:-} ]]; then
    DURATION=$DURATION wrk_run "${URL[nginx-1]}"; MR[nginx-1]=$RUN_RPS
  fi
  RATE=$(awk -v r="${MR[nginx-1]}" 'BEGIN{ printf "%d", r / 2 }')
  # h2load --rps: a request RATE per client (request-rate, unlike -r/--rate, which is the rate
  # at which connections are opened). Each client's timer is its own (started when it connects,
  # so the clients' sends interleave); requests due while the client's one HTTP/1 request is
  # still in flight wait and go out as soon as it is answered, so the rate holds as long as the
  # proxy keeps up. --h1 keeps each connection alive for all its requests (-m 1: no pipelining).
  # Latency is measured from the send, not from when the request was due: with RATE_CLIENTS
  # connections each has RATE_CLIENTS / RATE s between requests, far above the p99 here, so a
  # request rarely waits for its predecessor.
  CLIENTS=${RATE_CLIENTS:-128}
  URL[gw-rate]="http://127.0.0.1:${GWP[1000]}/api/s1/items/9"; URL[nginx-rate]="http://127.0.0.1:$NGX1/api/s1/items/9"
  # RATE_PIN=1: each proxy (all its threads) on CPU 1, h2load and the upstream on CPU 0, so the
  # load generator does not take the proxy's core (both proxies pinned alike). Other processes
  # on the machine are not pinned and may still share either core.
  H2LOAD=(h2load)
  if [[ ${RATE_PIN:-0} == 1 ]] && (( $(nproc) >= 2 )); then
    for p in $NGX1_MASTER ${PROC[nginx-1]} ${GWPID[1000]}; do taskset -a -cp 1 "$p" > /dev/null; done
    for p in $UP_MASTER $(nginx_workers "$UP_MASTER"); do taskset -a -cp 0 "$p" > /dev/null; done
    H2LOAD=(taskset -c 0 h2load)
    echo "pinned: proxies on CPU 1, h2load and the upstream on CPU 0"
  fi
  # rate_run CASE RATE: one run at RATE req/s (lib.sh's h2load_rate_run: the clients' requests
  # spread out, not in bursts); sets R_P50 R_P99 R_P999 (ms) and R_RPS.
  rate_run() { h2load_rate_run "${URL[$1]}" "$2" "$CLIENTS" "$WORK/rate-$1.log"; }
  # rate_rounds RATE: ROUNDS alternating rounds of both proxies at RATE; prints each round and a
  # table; sets HELD (both held >= 95% of RATE in every round) and P99R / P999R (gateway over
  # nginx, medians of the rounds).
  rate_rounds() {
    local r c order low
    declare -A p50 p99 p999 rps
    for c in $RATE_CASES; do p50[$c]=""; p99[$c]=""; p999[$c]=""; rps[$c]=""; done
    for r in $(seq 1 "$ROUNDS"); do
      if (( r % 2 )); then order=$RATE_CASES; else order=$(tr ' ' '\n' <<<"$RATE_CASES" | tac | tr '\n' ' '); fi
      for c in $order; do
        rate_run "$c" "$1"
        p50[$c]+="$R_P50 "; p99[$c]+="$R_P99 "; p999[$c]+="$R_P999 "; rps[$c]+="$R_RPS "
        printf 'round %d %-11s target %6d req/s, achieved %6d req/s (%s)  p50 %6.3f ms  p99 %6.3f ms  p99.9 %6.3f ms  (%s)\n' \
          "$r" "$c" "$1" "$R_RPS" "$(ratio "$R_RPS" "$1")" "$R_P50" "$R_P99" "$R_P999" "$(loadavg)"
      done
    done
    echo
    printf '| %-11s | %10s | %10s | %8s | %8s | %8s |\n' case "target/s" "achieved/s" "p50 ms" "p99 ms" "p99.9 ms"
    printf '|-------------|-----------:|-----------:|---------:|---------:|---------:|\n'
    HELD=1
    for c in $RATE_CASES; do
      # the slowest round counts: a round that missed the rate measured another load
      low=$(tr ' ' '\n' <<<"${rps[$c]}" | grep -v '^$' | sort -n | head -1)
      LOW[$c]=$low
      awk -v a="$low" -v t="$1" 'BEGIN{ exit !(a >= 0.95 * t) }' || HELD=0
      printf '| %-11s | %10d | %10d | %8.3f | %8.3f | %8.3f |\n' "$c" "$1" "$low" "$(median "${p50[$c]}")" \
        "$(median "${p99[$c]}")" "$(median "${p999[$c]}")"
    done
    P99R=$(ratio "$(median "${p99[gw-rate]}")" "$(median "${p99[nginx-rate]}")")
    [[ -n ${p99[pingora-rate]:-} ]] && P99P=$(ratio "$(median "${p99[gw-rate]}")" "$(median "${p99[pingora-rate]}")")
    P999R=$(ratio "$(median "${p999[gw-rate]}")" "$(median "${p999[nginx-rate]}")")
  }
  declare -A LOW
  RATE_CASES="nginx-rate gw-rate"
  rate_rounds "$RATE"
  RESULT+=" fixed_rate_rps=$RATE fixed_rate_held=$HELD"
  if (( HELD )); then
    echo "(ratios at $RATE req/s, half nginx's one-worker maximum)"
    RESULT+=" fixed_rate_p99_vs_nginx=$P99R fixed_rate_p999_vs_nginx=$P999R"
  else
    echo "a round missed the target rate of $RATE req/s by more than 5%: no latency ratio at that rate (it would compare different loads)"
    RESULT+=" fixed_rate_p99_vs_nginx=missed fixed_rate_p999_vs_nginx=missed"
    if awk -v a="${LOW[nginx-rate]}" -v t="$RATE" 'BEGIN{ exit !(a >= 0.95 * t) }'; then
      # nginx held it, the gateway did not: the highest rate the gateway holds (from 90% of what
      # it reached, down by 15% a step, at most 4 steps), then both proxies at that rate
      echo; echo "== the highest rate the gateway holds, then both proxies at that rate"
      COMMON=$(awk -v a="${LOW[gw-rate]}" 'BEGIN{ printf "%d", a * 0.9 }')
      GW_HOLDS=0
      for _ in 1 2 3 4; do
        rate_run gw-rate "$COMMON"
        printf 'gateway at %6d req/s: achieved %6d (%s)  p99 %6.3f ms  (%s)\n' "$COMMON" "$R_RPS" "$(ratio "$R_RPS" "$COMMON")" "$R_P99" "$(loadavg)"
        if awk -v a="$R_RPS" -v t="$COMMON" 'BEGIN{ exit !(a >= 0.95 * t) }'; then GW_HOLDS=1; break; fi
        COMMON=$(awk -v a="$COMMON" 'BEGIN{ printf "%d", a * 0.85 }')
      done
      if (( GW_HOLDS )); then
        rate_rounds "$COMMON"
        echo "(ratios at $COMMON req/s, the highest rate found that the gateway holds; not half nginx's maximum)"
        RESULT+=" fixed_rate_common_rps=$COMMON fixed_rate_common_held=$HELD"
        if (( HELD )); then
          RESULT+=" fixed_rate_common_p99_vs_nginx=$P99R fixed_rate_common_p999_vs_nginx=$P999R"
        else
          RESULT+=" fixed_rate_common_p99_vs_nginx=missed fixed_rate_common_p999_vs_nginx=missed"
        fi
      else
        echo "the gateway held none of the rates tried (down to $COMMON req/s)"
        RESULT+=" fixed_rate_common_rps=none"
      fi
    fi
  fi
  # A normal load for the gateway: half of its own one-thread maximum (measured here with the
  # same wrk run as nginx's), both proxies at that rate. Half nginx's maximum is near or above
  # the gateway's saturation on this hardware, where p99 measures queueing, not the proxy.
  if [[ ${RATE_HALF_GW:-1} == 1 ]]; then
    DURATION=$DURATION wrk_run "${URL[gw-rate]}"; GWMAX=$RUN_RPS
    HALF_GW=$(awk -v r="$GWMAX" 'BEGIN{ printf "%d", r / 2 }')
    # and the minimal Pingora proxy (gateway/examples/minimal_proxy.rs) at the same rate: the
    # floor of Pingora's own HTTP/1 path, pinned like the gateway
    MIN_BIN=${MINIMAL_BIN:-$(dirname "$BIN")/examples/minimal_proxy}
    [[ -x $MIN_BIN ]] || (cd "$ROOT" && cargo build --profile "$(basename "$(dirname "$BIN")")" -p strangler-gateway --example minimal_proxy >&2)
    MINR=$(port); "$MIN_BIN" "127.0.0.1:$MINR" "127.0.0.1:$UP" > "$WORK/minimal-rate.log" 2>&1 & PIDS+=($!)
    MINR_PID=$!; wait_port "$MINR"
    [[ ${RATE_PIN:-0} == 1 ]] && (( $(nproc) >= 2 )) && taskset -a -cp 1 "$MINR_PID" > /dev/null
    URL[pingora-rate]="http://127.0.0.1:$MINR/api/s1/items/9"
    DURATION=1 wrk_run "${URL[pingora-rate]}"   # warm its pool like the others'
    echo; echo "== the proxies at half the gateway's own maximum ($GWMAX req/s measured, so $HALF_GW req/s)"
    RATE_CASES="nginx-rate gw-rate pingora-rate"; P99P=""
    rate_rounds "$HALF_GW"
    RESULT+=" fixed_rate_half_gw_rps=$HALF_GW fixed_rate_half_gw_held=$HELD"
    if (( HELD )); then
      RESULT+=" fixed_rate_half_gw_p99_vs_nginx=$P99R fixed_rate_half_gw_p999_vs_nginx=$P999R"
      RESULT+=" fixed_rate_half_gw_p99_vs_pingora=$P99P"
    else
      RESULT+=" fixed_rate_half_gw_p99_vs_nginx=missed fixed_rate_half_gw_p999_vs_nginx=missed"
      RESULT+=" fixed_rate_half_gw_p99_vs_pingora=missed"
    fi
  fi
  echo
fi

LOAD_END=$(loadavg)
echo "load average at start $LOAD_START, at end $LOAD_END"
echo "RESULT${RESULT} load1=${LOAD_END%% *}"
