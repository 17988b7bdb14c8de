#!/usr/bin/env bash
# What shadowing costs in instructions, whatever the machine's load (not a test).
#
# The same two routes as shadow-bench.sh (/off/{id} at stage legacy, /on/{id} at stage shadow
# with sample = 1.0) on one gateway run under `valgrind --tool=callgrind`, instrumentation on only
# from a warm-up on (so that valgrind's re-translation is behind us). For each mode: zero the
# counters, one wrk run (few connections: under valgrind the gateway serves a few hundred requests
# a second; the shadow threads are not niced and the queue is large, so no mirror is dropped),
# dump at once (the /metrics scrapes that wait for the queue
# to drain come after the dump: they are not counted; the mirrors still in flight at the dump, a
# handful of hundreds, are not either). Instructions (Ir, every thread of the process: proxy,
# shadow runtime, its queue polling) per primary request, and their ratio: the CPU ratio with
# every request mirrored and compared, without the scheduler's noise.
# The last line is machine-readable:
#   RESULT shadow_ir_per_req_off=... shadow_ir_per_req_on=... shadow_ir_ratio=... mirrors_dropped=...
#
# Usage: tests/perf/shadow-callgrind.sh [DURATION_S=4] [CONNECTIONS=4]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, built if missing)
#        KEEP=DIR keeps the callgrind dumps there (for callgrind_annotate)
#        PER_THREAD=1 dumps each thread on its own (`--separate-threads=yes`) and also prints
#        Ir per request on the proxy thread (the one running Pingora's proxy), on the shadow
#        threads (running the lanes' dispatchers) and on the others; the RESULT line then
#        carries shadow_ir_per_req_{proxy,shadow}_{off,on} too
set -euo pipefail

DURATION=${1:-4}
CONNS=${2:-4}
(( DURATION <= 10 )) || { echo "keep each wrk run <= 10 s" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/perf/lib.sh
source "$ROOT/tests/perf/lib.sh"
ensure_tools nginx wrk curl valgrind callgrind_control
BIN=$(gateway_bin "$ROOT")
bench_setup shadow-callgrind
LOAD_START=$(loadavg)

UP=$(port); SH=$(port); GW=$(port); GWA=$(port)
start_json_upstream "$WORK/legacy" "$UP"
start_json_upstream "$WORK/extracted" "$SH"
# valgrind runs one thread at a time: a niced shadow thread would fall behind and drop mirrors,
# and a dropped mirror costs less than a compared one; here every mirror must be compared
shadow_routes "$WORK/routes.toml" "$GW" "$GWA" "$UP" "$SH" 0 100000
"$BIN" check "$WORK/routes.toml" > /dev/null
[[ -n ${PER_THREAD:-} ]] && export VALGRIND_OPTS="${VALGRIND_OPTS:-} --separate-threads=yes"
callgrind_start "$WORK/cg.out" "$BIN" run --config "$WORK/routes.toml" --no-watch --pid-file "$WORK/gw.pid" \
  --upgrade-sock "$WORK/gw-upgrade.sock"
for _ in $(seq 1 6); do wait_port "$GW" 2>/dev/null && break; done   # valgrind starts slowly
wait_port "$GW"; wait_port "$GWA"
METRICS="http://127.0.0.1:$GWA/metrics"
callgrind_control -i on "$CG_PID" > /dev/null 2>&1
for m in off on; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$GW/$m/9" > /dev/null; done   # warm-up
shadow_settled "$METRICS" on
D0=$(metric "$METRICS" strangler_shadow_dropped_total 'route="on"')
C0=$(metric "$METRICS" strangler_shadow_compared_total 'route="on"')

declare -A IR N
dump=0
for m in off on; do
  callgrind_control -z "$CG_PID" > /dev/null 2>&1
  wrk_run "http://127.0.0.1:$GW/$m/9"
  callgrind_control -d "$m" "$CG_PID" > /dev/null 2>&1
  shadow_settled "$METRICS" on
  dump=$((dump + 1))
  N[$m]=$RUN_REQS
  if [[ -n ${PER_THREAD:-} ]]; then
    # one file per thread (OUT.N-TT); a thread is told by the code it ran
    sleep 2
    IR[$m]=0; IR[proxy_$m]=0; IR[shadow_$m]=0; IR[other_$m]=0
    for f in "$WORK/cg.out.$dump"-*; do
      for _ in $(seq 1 100); do grep -q '^totals:' "$f" && break; sleep 0.1; done
      t=$(awk '/^totals:/ {print $2}' "$f")
      if grep -q 'pingora_proxy::' "$f"; then k=proxy
      elif grep -q 'shadow::dispatch' "$f"; then k=shadow
      else k=other; fi
      IR[${k}_$m]=$(( ${IR[${k}_$m]} + t )); IR[$m]=$(( ${IR[$m]} + t ))
    done
    printf '%-4s per request: proxy thread %9.0f Ir, shadow threads %9.0f Ir, others %9.0f Ir\n' "$m" \
      "$(awk -v i="${IR[proxy_$m]}" -v n="${N[$m]}" 'BEGIN{print i/n}')" \
      "$(awk -v i="${IR[shadow_$m]}" -v n="${N[$m]}" 'BEGIN{print i/n}')" \
      "$(awk -v i="${IR[other_$m]}" -v n="${N[$m]}" 'BEGIN{print i/n}')"
  else
    f="$WORK/cg.out.$dump"
    for _ in $(seq 1 100); do [[ -s $f ]] && grep -q '^totals:' "$f" && break; sleep 0.1; done
    IR[$m]=$(awk '/^totals:/ {print $2}' "$f")
  fi
  printf '%-4s %8d requests  %14d Ir  %9.0f Ir/request\n' "$m" "${N[$m]}" "${IR[$m]}" \
    "$(awk -v i="${IR[$m]}" -v n="${N[$m]}" 'BEGIN{print i/n}')"
done
DROPPED=$(( $(metric "$METRICS" strangler_shadow_dropped_total 'route="on"') - D0 ))
COMPARED=$(( $(metric "$METRICS" strangler_shadow_compared_total 'route="on"') - C0 ))
[[ -n ${KEEP:-} ]] && { mkdir -p "$KEEP"; cp "$WORK"/cg.out.* "$KEEP/"; echo "dumps kept in $KEEP"; }
PER_OFF=$(awk -v i="${IR[off]}" -v n="${N[off]}" 'BEGIN{printf "%.0f", i/n}')
PER_ON=$(awk -v i="${IR[on]}" -v n="${N[on]}" 'BEGIN{printf "%.0f", i/n}')
echo "mirrors compared: $COMPARED for ${N[on]} requests, dropped: $DROPPED; load average at start $LOAD_START, at end $(loadavg)"
THREADS=""
if [[ -n ${PER_THREAD:-} ]]; then
  for k in proxy shadow; do for m in off on; do
    THREADS+=" shadow_ir_per_req_${k}_$m=$(awk -v i="${IR[${k}_$m]}" -v n="${N[$m]}" 'BEGIN{printf "%.0f", i/n}')"
  done; done
fi
echo "RESULT shadow_ir_per_req_off=$PER_OFF shadow_ir_per_req_on=$PER_ON shadow_ir_ratio=$(ratio "$PER_ON" "$PER_OFF") mirrors_dropped=$DROPPED$THREADS"
