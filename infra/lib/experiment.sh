# shellcheck shell=bash
# `infra/stack experiment [--mode short|full] [--cases 1,2,3,4] [--scenarios a,b] [ARGS…]`:
# the seed's scenario matrix (benchmarks/src/bin/experiment.rs).
#
# Builds the workspace's binaries once in the mode's profile (short → debug, full →
# release; STACK_PROFILE overrides), then runs `experiment`. For every case × scenario
# the experiment calls `infra/stack up --case N` / `down` itself with a private
# STACK_STATE_DIR, free ports for everything (KAFKA_PORT, MONGODB_PORT, SMTP_PORT,
# ORDER_PORT, …), fresh PostgreSQL databases and STACK_SKIP_BUILD=1, so it neither needs
# nor touches a stack started by `infra/stack up`. Every other option is passed to the
# binary (`experiment --help`).
#
# Results: full → benchmarks/results/<UTC date-time>/ and benchmarks/results/latest/;
# short → target/experiment/<UTC date-time>-short/ (results.json, summary.json,
# report.md, figures/*.svg, logs/).

cmd_experiment() {
    local mode=short args=() a
    for a in "$@"; do
        case $a in
            --mode=*) mode=${a#--mode=} ;;
        esac
    done
    local prev=""
    for a in "$@"; do
        [[ "$prev" == --mode ]] && mode=$a
        prev=$a
        args+=("$a")
    done
    [[ "$mode" == short || "$mode" == full ]] || die "--mode must be short or full (got '$mode')"
    local profile=${STACK_PROFILE:-}
    if [[ -z "$profile" ]]; then
        if [[ "$mode" == full ]]; then profile=release; else profile=debug; fi
    fi
    [[ "$profile" == debug || "$profile" == release ]] || die "STACK_PROFILE must be debug or release"
    install_all
    ensure_postgres
    command -v pgbench >/dev/null || warn "pgbench not found: the PostgreSQL ceiling will be missing"
    local profile_args=()
    [[ "$profile" == release ]] && profile_args=(--release)
    cd "$STACK_ROOT" || die "cannot enter $STACK_ROOT"
    log "building every binary (cargo build --bins ${profile_args[*]}); the experiment runs the $profile build"
    cargo build --bins "${profile_args[@]}" || die "cargo build --bins failed"
    export STACK_PROFILE="$profile" POSTGRES_URL TANSU_BIN SAGA_CACHE_DIR
    local t0=$SECONDS rc=0
    "$CARGO_TARGET/$profile/experiment" "${args[@]}" || rc=$?
    if ((rc == 0)); then
        log "experiment finished in $((SECONDS - t0))s"
    else
        log "experiment FAILED (exit $rc) after $((SECONDS - t0))s"
    fi
    return "$rc"
}
