#!/bin/bash
# The API checked by an outside tool: schemathesis (tests/api/requirements.txt) against a live
# daemon with an admin token, over every operation of GET /api/v1/openapi.json but the
# streaming ones below (each covered by its own tests), with the document's links for stateful
# sequences. It must find no server error (5xx), no response that violates its schema, no
# status code the document does not list and no wrong Content-Type; and it must have tested
# exactly the document's operations minus the exclusions (printed and compared here). Its
# hooks (st_hooks.py) keep it from revoking its own token.
#
# Usage: tests/api/schemathesis.sh            (after `cargo build`; CI runs it after the tests)
#   LOCALHOSTD_BIN       the daemon (default target/debug/localhostd)
#   LOCALHOSTD_TEST_PYTHON  the virtual environment's python3 that has schemathesis
#   ST_MAX_EXAMPLES      examples per operation and phase (default 40)
#   ST_SEED              hypothesis seed (default fixed, so a CI run is repeatable)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${LOCALHOSTD_BIN:-$root/target/debug/localhostd}
py=${LOCALHOSTD_TEST_PYTHON:-$root/target/ci-venv/bin/python3}
st="$(dirname "$py")/schemathesis"
[[ -x $bin ]] || { echo "schemathesis.sh: no daemon at $bin (cargo build first)" >&2; exit 1; }
[[ -x $st ]] || { echo "schemathesis.sh: no schemathesis beside $py (pip install -r tests/api/requirements.txt)" >&2; exit 1; }

# Left out, by operationId: the streaming operations (schemathesis reads a response to its
# end, and these stay open by design; each has its own tests), and the document itself, which
# schemathesis never tests when it loads the document from that URL (src/api/openapi.rs's
# tests check it).
excluded=(
    openapi_document    # GET /api/v1/openapi.json (api::openapi tests)
    executions_output   # SSE: an execution's output as it comes (tests/it/executions.rs)
    terminals_attach    # WebSocket (tests/it/terminals.rs, tests/e2e/term_client.py)
    terminals_output    # SSE / long poll of a terminal's output (tests/it/terminals.rs)
)

tmp=$(mktemp -d)
daemon=
cleanup() {
    if [[ -n $daemon ]]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fakes=$root/tests/it/tunnel_fakes
printf 'token\n' >"$tmp/ngrok.authtoken"
# Tunnels on, with the stand-ins for cloudflared and ngrok, so their routes answer for real;
# rate limits off: the fuzzer sends thousands of requests from one token.
cat >"$tmp/config.toml" <<CONF
state-dir = "$tmp/state"
[server]
listen = ["127.0.0.1:$port"]
[rate-limit]
enabled = false
[tunnels]
enabled = true
[tunnels.cloudflared]
path = "$fakes/cloudflared"
[tunnels.ngrok]
path = "$fakes/ngrok"
authtoken-file = "$tmp/ngrok.authtoken"
CONF
"$bin" serve --config "$tmp/config.toml" --log-target stderr >"$tmp/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
    [[ -s $tmp/state/initial-admin-token ]] && curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(cat "$tmp/state/initial-admin-token")
base=http://127.0.0.1:$port
# The run's own token, which its hooks never let it revoke (tests/api/st_hooks.py).
own_id=$(curl -fsS -H "Authorization: Bearer $token" "$base/api/v1/tokens" | python3 -c '
import json, sys
print(next(t["id"] for t in json.load(sys.stdin)["items"] if t["name"] == "initial-admin"))')
total=$(curl -fsS "$base/api/v1/openapi.json" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
print(sum(1 for item in doc["paths"].values() for m in item if m in ("get","put","post","delete","patch","head","options")))')
want=$((total - ${#excluded[@]}))
args=()
for id in "${excluded[@]}"; do args+=(--exclude-operation-id "$id"); done
echo "schemathesis.sh: $total operations in the document, ${#excluded[@]} streaming ones excluded: $want to test"
set +e
# From the scratch directory: schemathesis keeps its crash cache in ./.schemathesis.
cd "$tmp"
PYTHONPATH="$root/tests/api" SCHEMATHESIS_HOOKS=st_hooks LOCALHOSTD_ST_OWN_TOKEN_ID=$own_id \
"$st" run "$base/api/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance \
    --max-examples "${ST_MAX_EXAMPLES:-40}" --seed "${ST_SEED:-20261206}" \
    --workers 1 --request-timeout 30 --no-color \
    "${args[@]}" 2>&1 | tee "$tmp/st.out"
rc=${PIPESTATUS[0]}
set -e
tested=$(sed -n 's/^ *Tested: *\([0-9][0-9]*\).*/\1/p' "$tmp/st.out" | tail -1)
echo "schemathesis.sh: tested ${tested:-?} operations (want $want)"
if [[ $rc -ne 0 ]]; then
    echo "schemathesis.sh: FAIL: schemathesis found problems (above); the daemon's log:" >&2
    tail -50 "$tmp/daemon.log" >&2
    exit 1
fi
# A run that lost its own credential midway tested nothing after that (only 401s): refuse it.
if ! curl -fsS -o /dev/null -H "Authorization: Bearer $token" "$base/api/v1/tokens"; then
    echo "schemathesis.sh: FAIL: the run's own token no longer works; what came after was not tested" >&2
    exit 1
fi
if [[ ${tested:-0} -ne $want ]]; then
    echo "schemathesis.sh: FAIL: tested ${tested:-0} operations, not the $want the document has minus the exclusions" >&2
    exit 1
fi
echo "schemathesis.sh: ok"
