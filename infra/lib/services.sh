# shellcheck shell=bash
# The project's own processes: the Kakao Pay simulator and the three services.

# STACK_PROFILE (debug|release, default debug): which build of the binaries runs.
service_bin() { printf '%s/%s/%s' "$CARGO_TARGET" "${STACK_PROFILE:-debug}" "$1"; }

service_port() {
    case $1 in
        kakaopay-sim) printf '%s' "$KAKAOPAY_SIM_PORT" ;;
        payment | payment-[0-9]*) nth_port "$PAYMENT_PORT" "${PAYMENT_PORTS:-}" "$(instance_index "$1")" ;;
        order) printf '%s' "$ORDER_PORT" ;;
        notifier | notifier-[0-9]*) nth_port "$NOTIFIER_PORT" "${NOTIFIER_PORTS:-}" "$(instance_index "$1")" ;;
        mailer-blocking) printf '%s' "$MAILER_PORT" ;;
        tansu) printf '%s' "$KAFKA_PORT" ;;
        mongodb) printf '%s' "$MONGODB_PORT" ;;
        smtp) printf '%s' "$SMTP_PORT" ;;
    esac
}

service_host() {
    case $1 in
        kakaopay-sim) printf '%s' "$KAKAOPAY_SIM_HOST" ;;
        payment | payment-[0-9]*) printf '%s' "$PAYMENT_HOST" ;;
        order) printf '%s' "$ORDER_HOST" ;;
        notifier | notifier-[0-9]*) printf '%s' "$NOTIFIER_HOST" ;;
        mailer-blocking) printf '%s' "$MAILER_HOST" ;;
        *) printf '127.0.0.1' ;;
    esac
}

service_url() { printf 'http://%s:%s' "$(service_host "$1")" "$(service_port "$1")"; }

# The readiness probe of each process (the simulator has no dependencies: /healthz).
service_probe() {
    case $1 in
        kakaopay-sim) printf '%s/healthz' "$(service_url "$1")" ;;
        *) printf '%s/readyz' "$(service_url "$1")" ;;
    esac
}

# STACK_SKIP_BUILD=1: use the binaries already built (the experiment builds them once).
build_services() {
    local profile_args=()
    [[ "${STACK_PROFILE:-debug}" == release ]] && profile_args=(--release)
    if [[ "${STACK_SKIP_BUILD:-0}" != 1 ]]; then
        log "building the services: cargo build --bins ${profile_args[*]} (in $STACK_ROOT)"
        (cd "$STACK_ROOT" && cargo build --bins "${profile_args[@]}") || die "cargo build --bins failed"
    fi
    local s
    for s in "${SERVICE_NAMES[@]}"; do
        s="$(base_service "$s")"
        [[ -x "$(service_bin "$s")" ]] || die "binary $(service_bin "$s") was not built"
    done
}

start_services() {
    local s i
    check_running_case
    ensure_state_dirs
    printf '%s\n' "$SAGA_CASE" >"$STATE/case"
    for s in "${SERVICE_NAMES[@]}"; do
        i="$(instance_index "$s")"
        if ((i > 1)); then
            # Further instances wait for the first one to be ready: two processes
            # running the migrations of a fresh database at once collide.
            wait_ready_one "$(base_service "$s")"
        fi
        if ! is_running "$s" && ! port_taken "$s" "$(service_port "$s")"; then
            start_instance "$s"
        fi
    done
}

# wait_ready_one NAME — until NAME's probe answers 200 (STACK_READY_TIMEOUT).
wait_ready_one() {
    local s=$1 deadline=$((SECONDS + STACK_READY_TIMEOUT))
    until [[ "$(http_status "$(service_probe "$s")")" == 200 ]]; do
        if ! is_running "$s"; then
            tail_log "$s"
            die "$s exited (log: $(log_file "$s"))"
        fi
        ((SECONDS < deadline)) || die "$s not ready after ${STACK_READY_TIMEOUT}s"
        sleep 0.5
    done
}

# start_instance NAME — instance n of a service (payment, payment-2, …). Each instance
# keeps a stable consumer-group identity of its own (<service>-<n>): one that crashed and
# restarts takes back its partitions at once (static membership; see
# shared_events::kafka::KafkaSettings::group_instance_id), and two never fence each other.
start_instance() {
    local s=$1 base i port env_args
    base="$(base_service "$s")"
    i="$(instance_index "$s")"
    env_args=(KAFKA_GROUP_INSTANCE_ID="$base-$i")
    if ((i > 1)); then
        port="$(service_port "$s")"
        case $base in
            payment)
                env_args+=(PAYMENT_PORT="$port")
                # Kakao Pay sends the shopper back to the instance that asked for the
                # payment, unless a public URL of its own was configured.
                if [[ "$PAYMENT_PUBLIC_URL" == "http://$PAYMENT_HOST:$PAYMENT_PORT" ]]; then
                    env_args+=(PAYMENT_PUBLIC_URL="http://$PAYMENT_HOST:$port")
                fi
                ;;
            notifier) env_args+=(NOTIFIER_PORT="$port") ;;
        esac
    fi
    # `env` execs the binary: the PID file still names the service itself.
    start_bg "$s" "$base" "$STACK_ROOT" env "${env_args[@]}" "$(service_bin "$base")"
}

# Polls every service's probe until it answers 200, printing what it still waits for.
wait_services_ready() {
    local timeout=${1:-$STACK_READY_TIMEOUT} deadline s code pending last=""
    deadline=$((SECONDS + timeout))
    log "waiting up to ${timeout}s for: ${SERVICE_NAMES[*]}"
    while :; do
        pending=()
        for s in "${SERVICE_NAMES[@]}"; do
            if ! is_running "$s"; then
                tail_log "$s"
                die "$s exited (log: $(log_file "$s")); run 'infra/stack down' to stop the rest"
            fi
            code="$(http_status "$(service_probe "$s")")"
            [[ "$code" == 200 ]] || pending+=("$s($code)")
        done
        ((${#pending[@]} == 0)) && break
        if [[ "${pending[*]}" != "$last" ]]; then
            log "  not ready yet: ${pending[*]}"
            last="${pending[*]}"
        fi
        if ((SECONDS >= deadline)); then
            for s in "${SERVICE_NAMES[@]}"; do tail_log "$s" 15; done
            die "not ready after ${timeout}s: ${pending[*]} (processes left running; 'infra/stack down' stops them)"
        fi
        sleep 1
    done
    log "all services ready"
}

services_running() {
    local s
    for s in "${SERVICE_NAMES[@]}"; do
        is_running "$s" || return 1
    done
}

# The case the running services were started as ($STATE/case, written by `up`).
running_case() {
    cat "$STATE/case" 2>/dev/null || printf '3'
}

# Fails when services of another case are running: they would be mixed with this one's.
check_running_case() {
    local s
    for s in "${ALL_SERVICE_NAMES[@]}"; do
        if is_running "$s" && [[ "$(running_case)" != "$SAGA_CASE" ]]; then
            die "the stack runs case $(running_case) ($s is up); 'infra/stack down' first to run case $SAGA_CASE"
        fi
    done
}

# Stops every service this script may have started, whatever the case they ran as.
stop_services() {
    local i names extra
    mapfile -t extra < <(extra_instances)
    names=("${ALL_SERVICE_NAMES[@]}" "${extra[@]}")
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do
        stop_one "${names[i]}"
    done
}

print_urls() {
    cat <<EOF
Saga shop is up (case $SAGA_CASE):
  storefront    $(service_url order)/shop     the shop in a browser
  order         $(service_url order)          GET /products, POST /orders, GET /orders/{id}
  payment       $(service_url payment)          GET /payments?order_id=ID  (Authorization: Bearer \$PAYMENT_API_TOKEN)
  mail          $(service_url "$(mail_service)")          $(mail_service): GET /notifications?order_id=ID  (Authorization: Bearer \$NOTIFIER_API_TOKEN)$(print_instances)
  kakaopay-sim  $(service_url kakaopay-sim)          GET /__sim/ledger
  every service: /healthz /readyz /metrics /openapi.json
  Kafka         $KAFKA_BROKERS   MongoDB $MONGODB_URI   SMTP $SMTP_HOST:$SMTP_PORT (Maildir $SMTP_MAILDIR)
  logs          $LOG_DIR   (infra/stack logs NAME)
EOF
}

# The instances beyond the first, one line each (for print_urls).
print_instances() {
    local s
    for s in "${SERVICE_NAMES[@]}"; do
        [[ "$(instance_index "$s")" == 1 ]] || printf '\n  %-13s %s' "$s" "$(service_url "$s")"
    done
}

print_status() {
    local s pid alive port listening extra
    mapfile -t extra < <(extra_instances)
    printf '%-16s %-8s %-6s %-6s %s\n' NAME PID ALIVE PORT LISTENING
    for s in "${DEP_NAMES[@]}" "${ALL_SERVICE_NAMES[@]}" "${extra[@]}"; do
        port="$(service_port "$s")"
        if pid="$(running_pid "$s")"; then
            alive=yes
        else
            alive=no
            if [[ -f "$(pid_file "$s")" ]]; then pid="stale"; else pid="-"; fi
        fi
        if port_open "$port" "$(service_host "$s")"; then listening=yes; else listening=no; fi
        printf '%-16s %-8s %-6s %-6s %s\n' "$s" "$pid" "$alive" "$port" "$listening"
    done
}
