#!/usr/bin/env bash
# Cluster mode on one machine: one Redis and two gateway replicas that share
# it, driven with curl the way a portal and a browser would.
#
#   bash examples/cluster/run.sh       # needs redis-server, openssl, curl
#
# A PAT minted on replica A is exchanged on replica B; the session cookie B
# sets is accepted by A; a revocation sent to B ends the session on A.
# All on 127.0.0.1, in a temporary folder, stopped by PID on exit. Each step
# prints what it expects and what it got; the first difference exits 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in redis-server redis-cli openssl curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install redis-server openssl curl)" >&2; exit 1; }
done
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build --release --quiet --bin embedgate --example bench_upstream

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    for f in "$work"/replica-*.err; do [ -s "$f" ] && { echo "--- last lines of $(basename "$f")"; tail -n 15 "$f"; }; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN PID: until FILE has a line matching PATTERN (10 s).
wait_for() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "process $3 exited early:"; cat "$1" "${1%.out}.err" 2>/dev/null; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1"; exit 1
}
# check WHAT EXPECTED GOT [DETAIL]: prints one result line; exits 1 on a mismatch.
check() {
  if [ "$2" = "$3" ]; then printf '   ok    %-52s %s %s\n' "$1" "$3" "${4:-}"
  else printf '   FAIL  %-52s expected %s, got %s %s\n' "$1" "$2" "$3" "${4:-}"; exit 1; fi
}

# --- Redis on a free loopback port (another if it is taken), a password, no persistence.
rpass=$(openssl rand -hex 16)
rport=""
for _ in $(seq 20); do
  p=$((10000 + RANDOM % 20000))   # below Linux's ephemeral ports
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
    --requirepass "$rpass" > "$work/redis.out" 2>&1 &
  for _ in $(seq 100); do
    grep -q 'Ready to accept' "$work/redis.out" 2>/dev/null && { rport=$p; break; }
    kill -0 $! 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$rport" ] && { pids+=($!); break; }
  kill $! 2>/dev/null || true
done
[ -n "$rport" ] || { echo "redis-server did not start:"; cat "$work/redis.out"; exit 1; }
rcli() { redis-cli -p "$rport" -a "$rpass" --no-auth-warning "$@"; }
echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$rport"

# --- The upstream app (answers every request with 1 KiB).
target/release/examples/bench_upstream 127.0.0.1:0 > "$work/upstream.out" &
pids+=($!)
wait_for "$work/upstream.out" listening "${pids[-1]}"
upstream=$(awk '/listening/ {print $2}' "$work/upstream.out")

# --- One config, run by both replicas (each gets its own ports from listen = :0).
token=$(openssl rand -hex 32)
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
openssl genpkey -algorithm ed25519 -out "$work/assertion-key.pem" 2>/dev/null
app=8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc
user=alice@example.com
cat > "$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "https://embed.example.com"   # the load balancer's URL in a real deployment
[assertion]
key = "assertion-key.pem"                  # the same key on every replica
[api]
token_sha256 = ["$hash"]
[store]
kind = "redis"
url = "redis://:$rpass@127.0.0.1:$rport/0"
timeout_ms = 250
key_prefix = "embedgate:"
[[users]]
email = "$user"
[[apps]]
id = "$app"
upstream = "http://$upstream"
allow_users = ["*"]
TOML
echo "config shared by both replicas ($work/gateway.toml):"
sed 's/^/   | /' "$work/gateway.toml"
target/release/embedgate check --config "$work/gateway.toml" > "$work/check.out" 2>&1 ||
  { echo "embedgate check refused the config:"; cat "$work/check.out"; exit 1; }

for r in a b; do
  target/release/embedgate --config "$work/gateway.toml" > "$work/replica-$r.out" 2> "$work/replica-$r.err" &
  pids+=($!)
  wait_for "$work/replica-$r.out" 'embedgate ready' "${pids[-1]}"
  printf -v "addr_$r" '%s' "$(sed -n 's/.*public=http:\/\/\([^ ]*\).*/\1/p' "$work/replica-$r.out")"
  printf -v "admin_$r" '%s' "$(sed -n 's/.* admin=http:\/\/\([^ ]*\).*/\1/p' "$work/replica-$r.out")"
done
echo "replica A on $addr_a (admin $admin_a), replica B on $addr_b (admin $admin_b)"
echo
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
api() { curl -s -w '\n%{http_code}' -X POST "http://$1$2" -H "Authorization: Basic $token" \
  -H 'Content-Type: application/json' -d "$3"; }

echo "0. both replicas are ready (their admin /readyz checks Redis)"
check "GET /readyz on A" 200 "$(code "http://$admin_a/readyz")"
check "GET /readyz on B" 200 "$(code "http://$admin_b/readyz")"

echo "1. the portal backend mints a PAT on replica A"
out=$(api "$addr_a" /api/ext/users/personal-access-token "{\"email\": \"$user\", \"appId\": \"$app\"}")
pat=$(sed -n 's/.*"personalAccessToken":"\(pat_[0-9a-f]*\)".*/\1/p' <<<"$out")
check "POST /api/ext/users/personal-access-token" 201 "$(tail -n1 <<<"$out")" "(${pat:0:12}…)"

echo "2. the browser opens the embed URL on replica B"
curl -s -o /dev/null -D "$work/exchange.h" "http://$addr_b/embed-apps/$app?personal-access-token=$pat"
cookie=$(sed -n 's/^set-cookie: \([^;]*\).*/\1/ip' "$work/exchange.h")
check "GET /embed-apps/<app>?personal-access-token=<pat>" 303 "$(awk 'NR==1 {print $2}' "$work/exchange.h")" \
  "+ cookie ${cookie:0:26}…"
check "the same PAT again, on A (single use)" 401 "$(code "http://$addr_a/embed-apps/$app?personal-access-token=$pat")"
echo "   Redis now holds (SHA-256 hashes, never a token):"
rcli --scan --pattern 'embedgate:*' | sort | sed 's/^/     /'

echo "3. the browser uses the app through replica A with B's cookie"
check "GET /embed-apps/<app>/ on A" 200 "$(code -H "Cookie: $cookie" "http://$addr_a/embed-apps/$app/")"
check "GET /embed-apps/<app>/ on B" 200 "$(code -H "Cookie: $cookie" "http://$addr_b/embed-apps/$app/")"

echo "4. the portal backend revokes the user's sessions on replica B"
out=$(api "$addr_b" /api/ext/users/sessions/revoke "{\"email\": \"$user\"}")
start=$(date +%s%N)
check "POST /api/ext/users/sessions/revoke" 200 "$(tail -n1 <<<"$out")" "$(head -n1 <<<"$out")"

echo "5. replica A refuses the session (within ~1 s: its session cache)"
got=""
for _ in $(seq 30); do
  got=$(code -H "Cookie: $cookie" "http://$addr_a/embed-apps/$app/")
  [ "$got" = 401 ] && break
  sleep 0.1
done
check "GET /embed-apps/<app>/ on A" 401 "$got" "after $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo
echo "cluster mode works: PAT, session and revocation shared through Redis."
