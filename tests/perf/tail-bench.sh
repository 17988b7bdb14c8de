#!/usr/bin/env bash
# Where the gateway's latency tail at a normal load comes from (not a test): the gateway (1,000
# routes, one thread), the minimal Pingora proxy (gateway/examples/minimal_proxy.rs) and nginx
# (one worker) on the same upstream, each driven at the same fixed rate with the requests spread
# out (lib.sh's h2load_rate_run), in alternating rounds. For each run: p50 / p99 / p99.9; for the
# gateway, each thread's CPU and run delay (time runnable but not running, from
# /proc/<tid>/schedstat) and wake-ups; for every run, the 50-ms windows in which more than 5% of
# the requests took over SLOW_MS: whether the slow requests come in episodes, and whether at a
# period of the gateway's own background work (2 s dashboard tick, 200 ms rollout poll).
#
# The last line is machine-readable:
#   RESULT tail_rate=... tail_p99_gateway=... tail_p99_pingora=... tail_p99_nginx=...
#          tail_p99_vs_pingora=... tail_p99_vs_nginx=... tail_slow_windows_gateway=...
#          tail_slow_windows_pingora=... tail_slow_cpu_ratio_gateway=... tail_slow_cpu_ratio_pingora=...
#          load1=...
# tail_slow_cpu_ratio_*: the proxy's CPU per request in its slow windows over that in the other
# windows (from its threads' CPU sampled every 10 ms): about 1 when it waited in a slow window
# (for the CPU, the upstream, the load generator), above 1 when each request cost it more there.
#
# Usage: tests/perf/tail-bench.sh [DURATION_S=5] [RATE=9000] [ROUNDS=2]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, built if missing),
#        MINIMAL_BIN (default: examples/minimal_proxy next to GATEWAY_BIN, built if missing),
#        RATE_CLIENTS (default 128), PIN=1 (proxies on CPU 1, h2load and the upstream on CPU 0),
#        SAT=S (each proxy first driven S seconds at saturation by wrk, default 1: a warm-up),
#        OVER=R (each proxy first driven at R req/s by h2load, e.g. above the gateway's maximum),
#        SLOW_MS (default 3)
set -euo pipefail

DURATION=${1:-5}
RATE=${2:-9000}
ROUNDS=${3:-2}
CONNS=32
(( DURATION <= 10 )) || { echo "keep each run <= 10 s" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/perf/lib.sh
source "$ROOT/tests/perf/lib.sh"
ensure_tools nginx wrk curl python3 h2load
BIN=$(gateway_bin "$ROOT")
MIN_BIN=${MINIMAL_BIN:-$(dirname "$BIN")/examples/minimal_proxy}
[[ -x $MIN_BIN ]] || (cd "$ROOT" && cargo build --profile "$(basename "$(dirname "$BIN")")" -p strangler-gateway --example minimal_proxy >&2)
bench_setup tail-bench
LOAD_START=$(loadavg)
CLIENTS=${RATE_CLIENTS:-128}
SLOW_US=$(( ${SLOW_MS:-3} * 1000 ))

UP=$(port); start_json_upstream "$WORK/up" "$UP"; UP_MASTER=${PIDS[-1]}
GW=$(port); GWA=$(port); gen_routes 1000 "$WORK/routes.toml" "$GW" "$GWA" 1
start_gateway "$WORK/routes.toml" gateway; GW_MAIN=$GW_PID
MINI=$(port); "$MIN_BIN" "127.0.0.1:$MINI" "127.0.0.1:$UP" > "$WORK/minimal.log" 2>&1 & PIDS+=($!); MIN_PID=$!
NG=$(port); start_nginx_proxy "$WORK/ngx" "$NG" 1
for p in $UP $GW $MINI $NG; do wait_port "$p"; done
declare -A URL=([gateway]="http://127.0.0.1:$GW/api/s1/items/9" [pingora]="http://127.0.0.1:$MINI/api/s1/items/9"
                [nginx]="http://127.0.0.1:$NG/api/s1/items/9")
H2LOAD=(h2load)
if [[ ${PIN:-0} == 1 ]] && (( $(nproc) >= 2 )); then
  pin_cpu 1 "$GW_MAIN" "$MIN_PID" "$NGX_MASTER"; pin_cpu 0 "$UP_MASTER"
  H2LOAD=(taskset -c 0 h2load)
  echo "pinned: proxies on CPU 1, h2load and the upstream on CPU 0"
fi
for c in gateway pingora nginx; do
  DURATION=${SAT:-1} wrk_run "${URL[$c]}"
  if [[ -n ${OVER:-} ]]; then h2load_rate_run "${URL[$c]}" "$OVER" "$CLIENTS" "$WORK/over.log"; echo "$c first at $OVER req/s: held $R_RPS"; fi
done

# threads: one line per gateway thread, sorted: tid, name (spaces as _), cpu ns, run-delay ns, slices
threads() {
  local t
  for t in /proc/"$GW_MAIN"/task/*; do echo "${t##*/} $(tr ' ' _ < "$t/comm") $(cat "$t/schedstat")"; done | sort
}
# episodes LOG: the 50-ms windows (from the first request) in which over 5% of requests took
# more than SLOW_US; prints them, sets EPISODES (their count)
episodes() {
  local out
  out=$(awk -v slow="$SLOW_US" 'NR==FNR { if (min == "" || $1 < min) min = $1; next }
    { b = int(($1 - min) / 50000); n[b]++; if ($3 > slow) s[b]++ }
    END { for (b in n) if (s[b] > 0.05 * n[b]) printf "%.2f %d %d\n", b * 0.05, s[b], n[b] }' "$1" "$1" | sort -n)
  EPISODES=$(grep -c . <<<"$out" || true)
  [[ -n $out ]] && awk '{ printf "    slow window at %5.2f s: %d of %d requests over '"${SLOW_MS:-3}"' ms\n", $1, $2, $3 }' <<<"$out"
  return 0
}

# cpu_in_windows LOG SAMPLES: the proxy's CPU per request in the slow 50-ms windows and in the
# others (CPU from cpu_sampler_start's samples at the window's edges over the requests started in
# it): whether a slow window is one where the proxy waited (same CPU per request) or one where
# each request cost it more. Sets CPU_SLOW CPU_OTHER (microseconds per request, "-" when none).
cpu_in_windows() {
  read -r CPU_SLOW CPU_OTHER < <(awk -v slow="$SLOW_US" '
    FILENAME == ARGV[1] && FNR == NR { if (min == "" || $1 < min) min = $1; next }
    FILENAME == ARGV[2] { b = int(($1 - min) / 50000); n[b]++; if ($3 > slow) s[b]++; if (b > last) last = b; next }
    { t[++k] = $1; c[k] = $2 }
    END {
      j = 1
      for (b = 0; b <= last; b++) {           # CPU at each window edge: the last sample before it
        edge = min + b * 50000
        while (j < k && t[j + 1] <= edge) j++
        at[b] = (t[j] <= edge) ? c[j] : ""
      }
      for (b = 0; b < last; b++) {
        if (at[b] == "" || at[b + 1] == "" || !n[b]) continue
        d = (at[b + 1] - at[b]) / 1000
        if (s[b] > 0.05 * n[b]) { cs += d; rs += n[b] } else { co += d; ro += n[b] }
      }
      printf "%s %s\n", (rs ? sprintf("%.1f", cs / rs) : "-"), (ro ? sprintf("%.1f", co / ro) : "-")
    }' "$1" "$1" "$2")
}

declare -A P99 EPI CS CO
declare -A PID_OF=([gateway]=$GW_MAIN [pingora]=$MIN_PID [nginx]=$NGX_MASTER)
for c in gateway pingora nginx; do P99[$c]=""; EPI[$c]=0; CS[$c]=""; CO[$c]=""; done
echo "== $RATE req/s, $CLIENTS connections, spread out, ${DURATION} s a run, $ROUNDS rounds (load $LOAD_START)"
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then order="gateway pingora nginx"; else order="nginx pingora gateway"; fi
  for c in $order; do
    [[ $c == gateway ]] && threads > "$WORK/before"
    cpu_sampler_start "$WORK/cpu-$c.txt" "${PID_OF[$c]}"
    h2load_rate_run "${URL[$c]}" "$RATE" "$CLIENTS" "$WORK/rate-$c.log"
    cpu_sampler_stop
    printf 'round %d %-8s achieved %6d req/s  p50 %6.3f ms  p99 %6.3f ms  p99.9 %6.3f ms  (load %s)\n' \
      "$r" "$c" "$R_RPS" "$R_P50" "$R_P99" "$R_P999" "$(loadavg)"
    P99[$c]+="$R_P99 "
    if [[ $c == gateway ]]; then
      threads > "$WORK/after"
      join "$WORK/before" "$WORK/after" | awk '{ c = $7 - $3; d = $8 - $4; n = $9 - $5
        if (c > 1e6 || n > 100) printf "    thread %-16s cpu %8.1f ms  run delay %7.1f ms  wake-ups %6d\n", $2, c / 1e6, d / 1e6, n }'
    fi
    episodes "$WORK/rate-$c.log"; EPI[$c]=$(( ${EPI[$c]} + EPISODES ))
    cpu_in_windows "$WORK/rate-$c.log" "$WORK/cpu-$c.txt"
    echo "    $c CPU per request: $CPU_SLOW us in the slow windows, $CPU_OTHER us in the others"
    [[ $CPU_SLOW != - ]] && CS[$c]+="$CPU_SLOW "
    [[ $CPU_OTHER != - ]] && CO[$c]+="$CPU_OTHER "
  done
done
echo
for c in gateway pingora nginx; do
  printf '%-8s median p99 %6.3f ms, slow windows %d, CPU per request in slow / other windows %s / %s us\n' \
    "$c" "$(median "${P99[$c]}")" "${EPI[$c]}" "$(median "${CS[$c]}")" "$(median "${CO[$c]}")"
done
# the proxies' CPU per request in slow windows over that in the others (medians over rounds)
cpu_ratio() { [[ -n ${CS[$1]} && -n ${CO[$1]} ]] && ratio "$(median "${CS[$1]}")" "$(median "${CO[$1]}")" || echo 0; }
G=$(median "${P99[gateway]}"); P=$(median "${P99[pingora]}"); N=$(median "${P99[nginx]}")
LOAD_END=$(loadavg)
echo "load average at start $LOAD_START, at end $LOAD_END"
echo "RESULT tail_rate=$RATE tail_p99_gateway=$G tail_p99_pingora=$P tail_p99_nginx=$N" \
  "tail_p99_vs_pingora=$(ratio "$G" "$P") tail_p99_vs_nginx=$(ratio "$G" "$N")" \
  "tail_slow_windows_gateway=${EPI[gateway]} tail_slow_windows_pingora=${EPI[pingora]}" \
  "tail_slow_cpu_ratio_gateway=$(cpu_ratio gateway) tail_slow_cpu_ratio_pingora=$(cpu_ratio pingora)" \
  "load1=${LOAD_END%% *}"
