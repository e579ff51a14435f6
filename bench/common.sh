# What bench/load.sh and bench/instructions.sh share; sourced, not run.
# After `bench_setup`: $work (removed at exit), pids+=(…) to have a process
# stopped at exit, pin_load/pin_proxy (taskset on CPU 0 / CPU 1 when there
# are two CPUs), $upstream (bench_upstream's address), $token/$hash (an API
# token and its SHA-256) and $app (the embedded app's id).

bench_setup() {
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

  pin_load=() pin_proxy=()
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_load=(taskset -c 0) pin_proxy=(taskset -c 1)
  fi

  "${pin_load[@]}" target/release/examples/bench_upstream 127.0.0.1:0 > "$work/upstream.out" &
  pids+=($!)
  for _ in $(seq 50); do grep -q listening "$work/upstream.out" && break; sleep 0.1; done
  upstream=$(awk '/listening/ {print $2}' "$work/upstream.out")

  token=bench-token-$RANDOM$RANDOM
  hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
  app=8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc
}

# open_session ADDR: mints a PAT for bench@example.com on $app at the
# gateway on ADDR, exchanges it and prints the session cookie (name=value).
open_session() {
  local addr=$1 pat
  pat=$(curl -s -X POST "http://$addr/api/ext/users/personal-access-token" \
    -H "Authorization: Basic $token" -H 'Content-Type: application/json' \
    -d "{\"email\": \"bench@example.com\", \"appId\": \"$app\"}" | sed 's/.*"personalAccessToken":"\([^"]*\)".*/\1/')
  curl -s -o /dev/null -D - "http://$addr/embed-apps/$app?personal-access-token=$pat" \
    | sed -n 's/^set-cookie: \([^;]*\).*/\1/ip'
}
