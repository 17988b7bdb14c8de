#!/usr/bin/env bash
# What a mirror costs in system calls, per thread, whatever the machine's load (not a test).
#
# The same two routes as shadow-bench.sh (/off/{id} at stage legacy, /on/{id} at stage shadow
# with sample = 1.0; the shadow thread at nice 0 and a queue of 100,000, so that no mirror is
# dropped) on one gateway. For each route: attach `strace -f -ff` to every thread of the gateway,
# send a fixed number of requests (h2load --h1, keep-alive), wait until every mirror is compared,
# detach, and count the system calls each thread made, by thread name (`shadow` is the shadow
# runtime's thread; Pingora's proxy threads have other names). strace slows the process down:
# read counts per request, not times.
# The last line is machine-readable:
#   RESULT syscalls_per_req_off=... syscalls_per_req_on=... syscalls_per_mirror=...
#          shadow_thread_syscalls_per_mirror=... shadow_eventfd_writes_per_mirror=...
#          shadow_epoll_waits_per_mirror=... mirrors_compared=... mirrors_dropped=...
#   (shadow_eventfd_writes_per_mirror: 8-byte write(2)s by the shadow thread, i.e. wake-ups of
#   a tokio runtime's driver; per mirror = per "on" request, every mirror being compared)
#
# Usage: tests/perf/shadow-syscalls.sh [REQUESTS=20000] [CONNECTIONS=8]
# Env:   GATEWAY_BIN (default: target/release-gw/strangler-gateway, built if missing)
#        KEEP=DIR keeps the per-thread strace files there
#        STRACE_OPTS: more strace options, e.g. "-k -e trace=write" (a stack per eventfd write;
#        the counts then cover only the traced calls)
set -euo pipefail

REQS=${1:-20000}
CONNS=${2:-8}
(( REQS <= 200000 )) || { echo "keep it to <= 200000 requests" >&2; exit 64; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/perf/lib.sh
source "$ROOT/tests/perf/lib.sh"
ensure_tools nginx h2load curl strace python3
BIN=$(gateway_bin "$ROOT")
bench_setup shadow-syscalls
LOAD_START=$(loadavg)

UP=$(port); SH=$(port); GW=$(port); GWA=$(port)
start_json_upstream "$WORK/legacy" "$UP"
start_json_upstream "$WORK/extracted" "$SH"
# every mirror must be compared (a dropped one costs less): not niced, a large queue
shadow_routes "$WORK/routes.toml" "$GW" "$GWA" "$UP" "$SH" 0 100000
start_gateway "$WORK/routes.toml" gw
for p in $UP $SH $GW $GWA; do wait_port "$p"; done
METRICS="http://127.0.0.1:$GWA/metrics"
h2ld() { timeout -k 5 120 h2load --h1 -t1 -c"$CONNS" -n"$1" "$2" > "$WORK/h2load.out" 2>&1 ||
  { echo "h2load failed against $2:"; cat "$WORK/h2load.out"; exit 1; }
  grep -q "status codes: $1 2xx" "$WORK/h2load.out" || { echo "not all 2xx from $2:"; cat "$WORK/h2load.out"; exit 1; }; }
for m in off on; do h2ld 4000 "http://127.0.0.1:$GW/$m/9"; done   # warm-up: connections, pools
shadow_settled "$METRICS" on
D0=$(metric "$METRICS" strangler_shadow_dropped_total 'route="on"')
C0=$(metric "$METRICS" strangler_shadow_compared_total 'route="on"')

# thread id -> name, for the gateway's threads
for t in /proc/"$GW_PID"/task/*; do echo "${t##*/} $(cat "$t/comm")"; done > "$WORK/threads"

for m in off on; do
  mkdir -p "$WORK/st-$m"
  strace -f -ff -qq ${STRACE_OPTS:-} -o "$WORK/st-$m/t" -p "$GW_PID" 2> "$WORK/strace-$m.log" & ST=$!
  # wait until strace is attached to every thread (it reports a TracerPid on each)
  for _ in $(seq 1 100); do
    n=0; for t in /proc/"$GW_PID"/task/*; do grep -q "^TracerPid:[[:space:]]*$ST$" "$t/status" && n=$((n + 1)); done
    (( n == $(ls /proc/"$GW_PID"/task | wc -l) )) && break; sleep 0.05
  done
  h2ld "$REQS" "http://127.0.0.1:$GW/$m/9"
  [[ $m == on ]] && shadow_settled "$METRICS" on
  kill -INT "$ST"; wait "$ST" 2>/dev/null || true
done
DROPPED=$(( $(metric "$METRICS" strangler_shadow_dropped_total 'route="on"') - D0 ))
COMPARED=$(( $(metric "$METRICS" strangler_shadow_compared_total 'route="on"') - C0 ))
[[ -n ${KEEP:-} ]] && { mkdir -p "$KEEP"; cp -r "$WORK"/st-* "$WORK/threads" "$KEEP/"; echo "strace files kept in $KEEP"; }

python3 - "$WORK" "$REQS" "$COMPARED" "$DROPPED" "$LOAD_START" "$(loadavg)" "$CONNS" <<'PY'
import collections, glob, os, re, sys
work, reqs, compared, dropped, load0, load1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
names = dict(l.split(None, 1) for l in open(os.path.join(work, "threads")).read().splitlines())
call = re.compile(r"^(?:\d+:\d+:\d+\.\d+ )?([a-z_0-9]+)\(")
counts = {}   # mode -> thread name -> syscall -> n
for m in ("off", "on"):
    per = collections.defaultdict(collections.Counter)
    for f in glob.glob(os.path.join(work, f"st-{m}", "t.*")):
        name = names.get(f.rsplit(".", 1)[1], "?").strip()
        for line in open(f, errors="replace"):
            k = call.match(line)
            if not k:
                continue
            sc = k.group(1)
            if sc == "write" and line.rstrip().endswith("= 8") and ", 8)" in line:
                sc = "write(eventfd)"
            per[name][sc] += 1
    counts[m] = per
calls = sorted({sc for m in counts for t in counts[m] for sc in counts[m][t]})
threads = sorted({t for m in counts for t in counts[m]})
print(f"{reqs} requests per route, h2load --h1 -c{sys.argv[7]}; load average at start {load0}, at end {load1}")
print("system calls per request, by thread (off / on):")
print(f"| {'thread':<14} | {'syscall':<16} | {'off':>7} | {'on':>7} |")
print(f"|{'-'*16}|{'-'*18}|{'-'*9}|{'-'*9}|")
for t in threads:
    for sc in calls:
        a, b = counts["off"][t][sc] / reqs, counts["on"][t][sc] / reqs
        if a or b:
            print(f"| {t:<14} | {sc:<16} | {a:7.3f} | {b:7.3f} |")
tot = {m: sum(sum(c.values()) for c in counts[m].values()) / reqs for m in counts}
sh = counts["on"].get("shadow", collections.Counter())
print(f"mirrors compared {compared}, dropped {dropped}")
print(f"RESULT syscalls_per_req_off={tot['off']:.2f} syscalls_per_req_on={tot['on']:.2f} "
      f"syscalls_per_mirror={tot['on'] - tot['off']:.2f} "
      f"shadow_thread_syscalls_per_mirror={sum(sh.values()) / reqs:.2f} "
      f"shadow_eventfd_writes_per_mirror={sh['write(eventfd)'] / reqs:.2f} "
      f"shadow_epoll_waits_per_mirror={sh['epoll_wait'] / reqs:.2f} "
      f"mirrors_compared={compared} mirrors_dropped={dropped} load1={load1.split()[0]}")
PY
