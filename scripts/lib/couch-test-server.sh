# The pinned CouchDB-compatible test server (pouchdb-server, tools/couch-test-server): install
# it, start it on a free port with an admin, stop it. Sourced by scripts/test and scripts/bench;
# expects $root (the repository) to be set.
server_dir="$root/tools/couch-test-server"
server_bin="$server_dir/node_modules/.bin/pouchdb-server"

install_test_server() {
  local stamp="$server_dir/node_modules/.kz-lock.sha256" want
  want="$(sha256sum "$server_dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -x "$server_bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  echo "==> npm ci (tools/couch-test-server)"
  # --ignore-scripts: leveldown ships prebuilt binaries; the only other install script compiles
  # sqlite3 for the unused --sqlite backend and would need the network or minutes of C builds.
  (cd "$server_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

server_pid="" tmp_dir="" log="$root/target/couch-test-server.log"
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
  if [[ -n "$tmp_dir" ]]; then rm -rf "$tmp_dir"; fi
}

# Starts pouchdb-server with the admin already in its config (no admin-party window) and waits
# until the admin credentials work. Returns 1 if it exited (e.g. port taken), 2 after 30s.
start_server() {
  local port="$1" pw="$2" i
  tmp_dir="$(mktemp -d "${TMPDIR:-/tmp}/kz-couch-test.XXXXXX")"
  ADMIN_PW="$pw" LOG_FILE="$log" node -e 'process.stdout.write(JSON.stringify(
    {admins: {admin: process.env.ADMIN_PW}, log: {file: process.env.LOG_FILE}}))' >"$tmp_dir/config.json"
  # -n: log only to the log file (the long form --no-stdout-logs is misparsed as a negation);
  # it also makes the server exit, not hang, when the port is taken.
  (cd "$tmp_dir" && exec "$server_bin" --port "$port" --dir "$tmp_dir/data" \
    --config "$tmp_dir/config.json" -n --no-color >>"$log" 2>&1) &
  server_pid=$!
  for ((i = 0; i < 300; i++)); do
    if curl -fsS --max-time 2 -o /dev/null "http://admin:$pw@127.0.0.1:$port/_session" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      stop_server
      return 1
    fi
    sleep 0.1
  done
  stop_server
  return 2
}

# Starts the server on a free port with a fresh admin password and exports COUCHDB_URL; only an
# early exit (most likely a port race) is worth another try.
start_test_server() {
  local pw attempt port started
  mkdir -p "$root/target"
  : >"$log"
  pw="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  for attempt in 1 2 3; do
    port="$(free_port)"
    started=0
    start_server "$port" "$pw" || started=$?
    [[ $started -eq 0 ]] && break
    echo "pouchdb-server did not start on port $port (attempt $attempt of 3); log: $log" >&2
    tail -n 20 "$log" >&2
    [[ $started -eq 1 && $attempt -lt 3 ]] || exit 1
  done
  echo "==> pouchdb-server pid $server_pid on http://127.0.0.1:$port (log: $log)"
  export COUCHDB_URL="http://admin:$pw@127.0.0.1:$port"
}

stop_test_server() {
  stop_server
}
