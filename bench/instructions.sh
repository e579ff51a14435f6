#!/usr/bin/env bash
# CPU instructions per proxied request, counted by valgrind's callgrind:
# unlike time, a count does not move with the machine's other load, so a
# cost of a few hundred instructions (the metrics, the access line) shows
# where bench/load.sh's microseconds drown in noise.
#
#   bash bench/instructions.sh          # needs wrk and valgrind (apt-get install wrk valgrind)
#   KEEP=/tmp/cg bash bench/instructions.sh   # also keeps the dumps, for
#       callgrind_annotate --inclusive=yes /tmp/cg/warn.cg.1 (passthrough; .2 embed)
#
# The gateway (one worker thread, bench_upstream behind it) runs under
# callgrind three times: RUST_LOG=warn (no request logs), then
# RUST_LOG=info with [log] access = false, then with it on. Instruction
# counting is switched on only while wrk sends DURATION seconds of load
# (after a warm-up) to the [passthrough], then to the embed route with a
# live session, so start-up is not counted; the process's every thread is
# (the log writer's too). Printed: user-space instructions per request for
# each, the access log's share (on minus off), and what the request metrics
# take (RequestMetrics::record and AtomicHistogram::observe, inclusive).
# System calls are the kernel's and not counted: this is the gateway's own
# code, the part a change to it moves.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in wrk valgrind callgrind_control callgrind_annotate; do
  command -v "$t" >/dev/null || { echo "$t is not installed (apt-get install wrk valgrind)"; exit 1; }
done
duration=${DURATION:-6}
cargo build --release --quiet --bin embedgate --example bench_upstream

. bench/common.sh
bench_setup

# per_request DUMP REQUESTS: "instructions metrics" per request in a dump.
per_request() {
  local total metrics
  total=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  # Each function's whole inclusive cost is its line that names the binary;
  # observe's counts its calls from record too, so the sum is an upper bound.
  metrics=$(callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$1" 2>/dev/null \
    | awk '/embedgate::metrics::(RequestMetrics::record|AtomicHistogram::observe) \[/ {gsub(",", "", $1); n += $1} END {print n + 0}')
  echo "$((total / $2)) $((metrics / $2))"
}

# count NAME RUST_LOG ACCESS: appends "NAME ROUTE instructions metrics
# requests" for the passthrough and the embed route to $work/r.
count() {
  local name=$1 log=$2 access=$3
  cat > "$work/$name.toml" <<TOML
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1"
worker_threads = 1
[api]
token_sha256 = ["$hash"]
[[users]]
email = "bench@example.com"
[[apps]]
id = "$app"
upstream = "http://$upstream"
allow_users = ["*"]
[passthrough]
upstream = "http://$upstream"
[log]
access = $access
TOML
  RUST_LOG=$log "${pin_proxy[@]}" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$name.cg" target/release/embedgate --config "$work/$name.toml" \
    > "$work/$name.out" 2> "$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do grep -q 'embedgate ready' "$work/$name.out" && break; sleep 0.1; done
  local addr cookie
  addr=$(sed -n 's/.*public=http:\/\/\([^ ]*\).*/\1/p' "$work/$name.out")
  cookie=$(open_session "$addr")
  local dump=0 route requests
  for route in passthrough embed; do
    local args=("http://$addr/")
    [ "$route" = embed ] && args=(-H "Cookie: $cookie" "http://$addr/embed-apps/$app/")
    "${pin_load[@]}" wrk -t1 -c4 -d2s "${args[@]}" > /dev/null
    callgrind_control -i on "$pid" > /dev/null 2>&1
    requests=$("${pin_load[@]}" wrk -t1 -c4 -d"${duration}s" "${args[@]}" | awk '/requests in/ {print $1}')
    callgrind_control -i off "$pid" > /dev/null 2>&1
    # A dump writes the counts so far and starts them again from zero.
    callgrind_control -d "$pid" > /dev/null 2>&1
    dump=$((dump + 1))
    echo "$name $route $(per_request "$work/$name.cg.$dump" "$requests") $requests" >> "$work/r"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work/$name".cg.* "$KEEP/"; fi
}

count warn warn true
count info_off info false
count info_on info true

value() { awk -v n="$1" -v r="$2" -v c="$3" '$1 == n && $2 == r {print $c}' "$work/r"; }
printf '%-36s %14s %14s\n' 'instructions/request' passthrough embed
for name in warn info_off info_on; do
  case $name in
    warn) label='RUST_LOG=warn' ;;
    info_off) label='RUST_LOG=info, access log off' ;;
    info_on) label='RUST_LOG=info, access log on' ;;
  esac
  printf '%-36s %14s %14s\n' "$label" "$(value $name passthrough 3)" "$(value $name embed 3)"
done
for route in passthrough embed; do
  off=$(value info_off $route 3)
  on=$(value info_on $route 3)
  warn=$(value warn $route 3)
  metrics=$(value warn $route 4)
  printf '%s: access log %d instructions/request (%.1f%% of the request at info)' \
    "$route" "$((on - off))" "$(echo "($on - $off) * 100 / $off" | bc -l)"
  if [ "$metrics" -gt 0 ]; then
    printf '; request metrics (record + observe, at most) %d (%.2f%% at warn)\n' \
      "$metrics" "$(echo "$metrics * 100 / $warn" | bc -l)"
  else
    # With LTO the metrics functions are inlined into the handler: no
    # function of their own to count.
    printf '; request metrics inlined (not counted apart)\n'
  fi
done
