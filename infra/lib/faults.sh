# shellcheck shell=bash
# `infra/stack faults [--orders N] [--results FILE] [-- TEST ARGS]`: the
# fault-injection suite (e2e/tests/faults), by default under the heavy load.
#
# Every scenario starts private servers of its own — tansu, nx-27017, the SMTP sink and
# the four binaries, on free loopback ports, data in a temp folder — so this neither
# needs nor touches what `infra/stack deps`/`up` started; only PostgreSQL ($POSTGRES_URL)
# is shared (each scenario creates and drops databases of its own) — except by the
# database-outage scenarios, which run a private server per database (initdb + pg_ctl from
# /usr/lib/postgresql/*/bin or $FAULT_PG_BIN, as the postgres user when run as root,
# stopped by PID; the shared server is never stopped). Every scenario ends by running
# saga-audit (e2e/src/bin/saga-audit.rs) on its stack. The suite builds the binaries
# itself (cargo build --bins). `infra/stack test` runs the same suite with the
# CI load (STACK_FAULT_ORDERS, default 60 orders per scenario), its result under target/.
#
# Result (unless --results): benchmarks/results/faults/latest.json — per scenario: orders, completed,
# cancelled, refunded, payment_failed, durations and every invariant's result; plus the
# run's orders_per_scenario, exit_code and total_secs.

cmd_faults() {
    local orders=1000 test_args=() results="$STACK_ROOT/benchmarks/results/faults/latest.json"
    while (($#)); do
        case $1 in
            --results)
                [[ $# -ge 2 ]] || die "--results needs a file"
                results=$2
                shift 2
                ;;
            --orders)
                [[ $# -ge 2 ]] || die "--orders needs a number"
                orders=$2
                shift 2
                ;;
            --orders=*)
                orders=${1#--orders=}
                shift
                ;;
            --)
                shift
                test_args=("$@")
                break
                ;;
            *) die "unknown option '$1' (see: infra/stack help)" ;;
        esac
    done
    [[ "$orders" =~ ^[1-9][0-9]*$ ]] || die "--orders must be a positive number (got '$orders')"
    install_all
    ensure_postgres
    mkdir -p "$(dirname "$results")"
    rm -f "$results"
    export FAULT_ORDERS="$orders" FAULT_RESULTS="$results" POSTGRES_URL TANSU_BIN SAGA_CACHE_DIR
    cd "$STACK_ROOT" || die "cannot enter $STACK_ROOT"
    log "fault suite: $orders orders per scenario, one scenario at a time; results: $results"
    local t0=$SECONDS rc=0
    cargo test -p e2e --test faults -- --test-threads 1 --nocapture "${test_args[@]}" || rc=$?
    local secs=$((SECONDS - t0))
    if [[ -f "$results" ]]; then
        local tmp="$results.tmp"
        jq --argjson rc "$rc" --argjson secs "$secs" --arg host "$(uname -n)" \
            --argjson cpus "$(nproc)" \
            '. + {exit_code: $rc, total_secs: $secs, host: $host, cpus: $cpus}' \
            "$results" >"$tmp" && mv "$tmp" "$results"
        log "results: $results"
        jq -r '.scenarios | to_entries[] | "  \(.key): \(if .value.passed then "ok" else "FAILED" end) — \(.value.orders) orders, \(.value.completed) completed, \(.value.cancelled) cancelled, \(.value.refunded) refunded, \(.value.payment_failed) payment failed, \(.value.duration_secs)s"' "$results" >&2 || true
    else
        warn "no result file was written ($results)"
    fi
    if ((rc == 0)); then log "fault suite passed in ${secs}s"; else log "fault suite FAILED (exit $rc) after ${secs}s"; fi
    return "$rc"
}
