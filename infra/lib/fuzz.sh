# shellcheck shell=bash
# `infra/stack fuzz`: schemathesis (pinned in infra/requirements.txt) against each
# service's /openapi.json, on a stack of its own — case 3, then case 2 for
# mailer-blocking — on free ports, fresh databases,
# its own topic prefix, consumer groups and state folder (the running Kafka, MongoDB and
# SMTP servers are reused), so it never touches a stack started by `infra/stack up`.
#
# Every run must find nothing: no 5xx, no answer that breaks the document (status,
# content type, headers, body schema), invalid input refused, undeclared methods 405,
# no refused (4xx) request that changes state (infra/fuzz_hooks.py), and no route the
# document says needs a token answering without one (ignored_auth). Bounded:
# FUZZ_EXAMPLES examples per operation (default 50). Output and JUnit reports under
# target/fuzz/; the last lines of each run are its summary.
#
# Left out, with their reasons: `GET /orders/{id}/events` (a stream held open for
# minutes, not a request/response), the simulator's test knobs `PUT /__sim/faults` and
# `POST /__sim/clock/advance` (they change how Kakao Pay answers everything after them).
# Services run in an order that keeps the shop's background work out of each other's
# state reads: payment before any order exists, the simulator before order makes
# payment call it.

FUZZ_CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,unsupported_method,refusals_change_nothing,ignored_auth"

# N free loopback ports, one per line.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Runs infra/stack VERB in the fuzz stack's environment only (nothing of this shell's
# derived defaults leaks in: the script derives them again from the ports).
fuzz_stack() {
    env -i PATH="$PATH" HOME="$HOME" ${CARGO_HOME:+CARGO_HOME="$CARGO_HOME"} \
        ${RUSTUP_HOME:+RUSTUP_HOME="$RUSTUP_HOME"} ${CARGO_TARGET_DIR:+CARGO_TARGET_DIR="$CARGO_TARGET_DIR"} \
        SAGA_CACHE_DIR="$SAGA_CACHE_DIR" TANSU_BIN="$TANSU_BIN" DIESEL_BIN="$DIESEL_BIN" \
        "${FUZZ_ENV[@]}" "$STACK_ROOT/infra/stack" "$@"
}

# fuzz_service NAME URL STATE [schemathesis options…]
fuzz_service() {
    local name=$1 url=$2 state=$3 rc=0
    shift 3
    log "fuzzing $name ($url/openapi.json, ${FUZZ_EXAMPLES} examples per operation)"
    # From the output folder: schemathesis keeps its cache (.schemathesis/) in the
    # working directory, and a run starts from none.
    (cd "$FUZZ_OUT" && FUZZ_STATE="$state" SCHEMATHESIS_HOOKS="$INFRA_DIR/fuzz_hooks.py" \
        "$VENV/bin/schemathesis" run "$url/openapi.json" --checks "$FUZZ_CHECKS" \
        --max-examples "$FUZZ_EXAMPLES" --workers 1 --request-timeout 10 --seed 14 \
        --report junit --report-junit-path "$FUZZ_OUT/$name.junit.xml" \
        "$@" >"$FUZZ_OUT/$name.txt" 2>&1) || rc=$?
    tail -n 12 "$FUZZ_OUT/$name.txt" | grep -E "generated|passed|failure|error" >&2 || true
    ((rc == 0)) || { tail -n 60 "$FUZZ_OUT/$name.txt" >&2; return 1; }
}

cmd_fuzz() {
    (($# == 0)) || die "fuzz takes no options"
    install_all
    start_deps
    FUZZ_OUT="$STACK_ROOT/target/fuzz"
    FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-50}"
    rm -rf "$FUZZ_OUT" && mkdir -p "$FUZZ_OUT"
    local id ports orders payments
    id="fuzz$(date +%s)"
    mapfile -t ports < <(free_ports 4)
    orders="$POSTGRES_URL/${id}_orders"
    payments="$POSTGRES_URL/${id}_payments"
    FUZZ_ENV=(STACK_STATE_DIR="$FUZZ_OUT/state" STACK_REUSE_FOREIGN=1 SAGA_CASE=3
        POSTGRES_URL="$POSTGRES_URL" KAFKA_PORT="$KAFKA_PORT" MONGODB_PORT="$MONGODB_PORT" SMTP_PORT="$SMTP_PORT"
        ORDER_PORT="${ports[0]}" PAYMENT_PORT="${ports[1]}" NOTIFIER_PORT="${ports[2]}" KAKAOPAY_SIM_PORT="${ports[3]}"
        ORDER_DATABASE_URL="$orders" PAYMENT_DATABASE_URL="$payments" MAILER_DATABASE_URL="$POSTGRES_URL/${id}_mail"
        KAFKA_TOPIC_PREFIX="$id." NOTIFIER_MONGODB_DATABASE="${id}_notifier"
        NOTIFIER_API_TOKEN="$NOTIFIER_API_TOKEN" PAYMENT_API_TOKEN="$PAYMENT_API_TOKEN"
        ORDER_CONSUMER_GROUP="$id-order" PAYMENT_CONSUMER_GROUP="$id-payment" NOTIFIER_CONSUMER_GROUP="$id-notifier")
    trap 'rc=$?; fuzz_stack down >&2 || true; stop_started_now; exit $rc' EXIT
    fuzz_stack up >"$FUZZ_OUT/up.log" 2>&1 || { tail -n 40 "$FUZZ_OUT/up.log" >&2; die "the fuzz stack did not start"; }
    local base=http://127.0.0.1 failed=()
    fuzz_service payment "$base:${ports[1]}" \
        "sql|$payments|SELECT status, count(*) FROM payments GROUP BY 1 ORDER BY 1; SELECT count(*) FROM gateway_calls" \
        -H "Authorization: Bearer $PAYMENT_API_TOKEN" || failed+=(payment)
    fuzz_service notifier "$base:${ports[2]}" "" -H "Authorization: Bearer $NOTIFIER_API_TOKEN" || failed+=(notifier)
    fuzz_service kakaopay-sim "$base:${ports[3]}" "http|$base:${ports[3]}/__sim/ledger" \
        --exclude-path /__sim/faults --exclude-path /__sim/clock/advance || failed+=(kakaopay-sim)
    fuzz_service order "$base:${ports[0]}" \
        "sql|$orders|SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1; SELECT count(*) FROM order_idempotency_keys" \
        --exclude-path '/orders/{id}/events' || failed+=(order)
    # Cases 1-2's mail service, mailer-blocking, stands where the notifier did.
    fuzz_stack down >"$FUZZ_OUT/down.log" 2>&1 || die "the fuzz stack did not stop"
    FUZZ_ENV+=(SAGA_CASE=2)
    fuzz_stack up >"$FUZZ_OUT/up-case2.log" 2>&1 ||
        { tail -n 40 "$FUZZ_OUT/up-case2.log" >&2; die "the case-2 fuzz stack did not start"; }
    fuzz_service mailer-blocking "$base:${ports[2]}" "sql|$POSTGRES_URL/${id}_mail|SELECT count(*) FROM mail_history" \
        -H "Authorization: Bearer $NOTIFIER_API_TOKEN" || failed+=(mailer-blocking)
    ((${#failed[@]} == 0)) || die "schemathesis found problems in: ${failed[*]} (target/fuzz/)"
    log "schemathesis found nothing (target/fuzz/)"
}
