#!/usr/bin/env bash
# Shadow traffic overhead on the primary path (not a test).
#
# Two nginx upstreams (legacy and the "extracted" service, both returning the same small JSON)
# behind one strangler-gateway (threads = 1) with two routes: /off/{id} at stage legacy
# (shadowing off) and /on/{id} at stage shadow with sample = 1.0 (every request mirrored to the
# second upstream and compared). The same wrk run is driven against each, alternating the order
# per round; prints primary req/s, p50, p99 per mode, the ratios, and the shadow report (how many
# were mirrored, compared, matched, dropped because the queue was full).
# The last line is machine-readable:
#   RESULT shadow_on_vs_off_rps=... shadow_on_vs_off_p99=...
#
# Usage: tests/perf/shadow-bench.sh [DURATION_S=8] [CONNECTIONS=32] [ROUNDS=3]
# Env:   GATEWAY_BIN (default: target/release/strangler-gateway, built if missing)
#        WRK_THREADS (default 1), SHADOW_THREADS (shadow runtime threads, default 1),
#        SHADOW_NICE (nice value of the shadow threads, default 10)
set -euo pipefail

DURATION=${1:-8}
CONNS=${2:-32}
ROUNDS=${3:-3}
(( DURATION <= 10 )) || { echo "keep each wrk run <= 10 s" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/perf/lib.sh
source "$ROOT/tests/perf/lib.sh"
require nginx wrk curl python3
BIN=$(gateway_bin "$ROOT")
bench_setup shadow-bench

UP=$(port); SH=$(port); GW=$(port); GWA=$(port)
start_json_upstream "$WORK/legacy" "$UP"
start_json_upstream "$WORK/extracted" "$SH"

cat > "$WORK/routes.toml" <<TOML
[gateway]
listen = "127.0.0.1:$GW"
admin_listen = "127.0.0.1:$GWA"
admin_token = "bench"
threads = 1
shadow_threads = ${SHADOW_THREADS:-1}
shadow_nice = ${SHADOW_NICE:-10}

[defaults]
upstream = "legacy"

[upstreams.legacy]
endpoints = ["127.0.0.1:$UP"]

[upstreams.svc]
endpoints = ["127.0.0.1:$SH"]

[[routes]]
name = "off"
match = { path = "/off/{id}" }
to = "svc"
stage = "legacy"

[[routes]]
name = "on"
match = { path = "/on/{id}" }
to = "svc"
stage = "shadow"

[routes.shadow]
sample = 1.0
TOML
"$BIN" check "$WORK/routes.toml" > /dev/null
RUST_LOG=error "$BIN" run --config "$WORK/routes.toml" --no-watch \
  --pid-file "$WORK/gw.pid" --upgrade-sock "$WORK/gw-upgrade.sock" > "$WORK/gw.log" 2>&1 & PIDS+=($!)
for p in $UP $SH $GW $GWA; do wait_port "$p"; done

declare -A URL=([off]="http://127.0.0.1:$GW/off/9" [on]="http://127.0.0.1:$GW/on/9")
for m in off on; do wrk -t1 -c"$CONNS" -d2s "${URL[$m]}" > /dev/null; done   # warm-up

declare -A RPS=([off]="" [on]="") P50=([off]="" [on]="") P99=([off]="" [on]="")
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="off on"; else order="on off"; fi
  for m in $order; do
    wrk_run "${URL[$m]}"
    RPS[$m]+="$RUN_RPS "; P50[$m]+="$RUN_P50 "; P99[$m]+="$RUN_P99 "
    printf 'round %d shadow-%-3s %10.0f req/s  p50 %6.3f ms  p99 %6.3f ms\n' "$r" "$m" "$RUN_RPS" "$RUN_P50" "$RUN_P99"
  done
done

echo
echo "median of $ROUNDS rounds, wrk -t${WRK_THREADS:-1} -c$CONNS -d${DURATION}s, gateway threads = 1, loopback"
printf '| %-10s | %10s | %8s | %8s |\n' shadow "req/s" "p50 ms" "p99 ms"
printf '|------------|-----------:|---------:|---------:|\n'
declare -A MR MP99
for m in off on; do
  MR[$m]=$(median "${RPS[$m]}"); MP99[$m]=$(median "${P99[$m]}")
  printf '| %-10s | %10.0f | %8.3f | %8.3f |\n' "$m" "${MR[$m]}" "$(median "${P50[$m]}")" "${MP99[$m]}"
done
echo
curl -s -H "authorization: Bearer bench" "http://127.0.0.1:$GWA/admin/shadow/on" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("shadow report (route on): mirrored %d, compared %d, matched %d, dropped (queue full) %d, shadow errors %d, shadow p99 %.2f ms"
      % (r["mirrored"], r["compared"], r["matched"], r["dropped"], r["errors"]["shadow"], r["latency"]["shadow"]["p99_ms"]))'
echo
echo "RESULT shadow_on_vs_off_rps=$(ratio "${MR[on]}" "${MR[off]}") shadow_on_vs_off_p99=$(ratio "${MP99[on]}" "${MP99[off]}")"
