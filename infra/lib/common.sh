# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by the files that source this one
# Shared helpers for infra/stack: paths, configuration defaults, logging, and the
# start/stop of background processes tracked by PID files.
#
# A PID file ($PID_DIR/<name>.pid) holds two lines: the PID, and a token that must
# appear in /proc/<pid>/cmdline. A PID file whose process is gone, or whose PID was
# reused by another program, is stale: it is ignored and removed. Processes are only
# ever signalled through their own PID file; nothing is stopped by name.

STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
INFRA_DIR="$STACK_ROOT/infra"
STATE="${STACK_STATE_DIR:-$STACK_ROOT/.stack}"
PID_DIR="$STATE/pids"
LOG_DIR="$STATE/logs"
DATA_DIR="$STATE/data"
SAGA_CACHE_DIR="${SAGA_CACHE_DIR:-$HOME/.cache/saga-shop}"
VENV="$SAGA_CACHE_DIR/venv"
TANSU_VERSION="0.6.0"
TANSU_BIN="${TANSU_BIN:-${CARGO_HOME:-$HOME/.cargo}/bin/tansu}"
# diesel print-schema generates the schema files (infra/lib/schema.sh); the same Diesel
# release as Cargo.lock's.
DIESEL_CLI_VERSION="2.3.14"
DIESEL_BIN="${DIESEL_BIN:-${CARGO_HOME:-$HOME/.cargo}/bin/diesel}"
CARGO_TARGET="${CARGO_TARGET_DIR:-$STACK_ROOT/target}"

# Names of the processes this script manages, in start order. The mail service depends
# on the case (select_services): the Tokio notifier (cases 3, 4) or the blocking mail
# service (cases 1, 2), on the same port. ALL_SERVICE_NAMES is what `down` and `status`
# look at, whatever the case.
DEP_NAMES=(tansu mongodb smtp)
SERVICE_NAMES=(kakaopay-sim payment order notifier)
ALL_SERVICE_NAMES=(kakaopay-sim payment order notifier mailer-blocking)

# The mail service of the case in $SAGA_CASE.
mail_service() {
    case "${SAGA_CASE:-3}" in
        1 | 2) printf 'mailer-blocking' ;;
        *) printf 'notifier' ;;
    esac
}

# Instances of a service: PAYMENT_INSTANCES, NOTIFIER_INSTANCES (default 1). The first
# keeps the service's own name (payment.pid, payment.log: everything that knows one
# instance still finds it); the others are <service>-2, <service>-3, … Each has its own
# port (see nth_port) and its own KAFKA_GROUP_INSTANCE_ID (<service>-<n>).
MAX_INSTANCES=8

# base_service NAME — payment-2 → payment (kakaopay-sim, mailer-blocking stay whole).
base_service() {
    if [[ "$1" =~ ^(.*)-([0-9]+)$ ]]; then printf '%s' "${BASH_REMATCH[1]}"; else printf '%s' "$1"; fi
}

# instance_index NAME — payment-2 → 2, payment → 1.
instance_index() {
    if [[ "$1" =~ -([0-9]+)$ ]]; then printf '%s' "${BASH_REMATCH[1]}"; else printf '1'; fi
}

instance_count() {
    local n
    case $1 in
        payment) n=${PAYMENT_INSTANCES:-1} ;;
        notifier) n=${NOTIFIER_INSTANCES:-1} ;;
        *) n=1 ;;
    esac
    printf '%s' "$n"
}

# Fails unless every *_INSTANCES is a count in 1..MAX_INSTANCES (here, not in the
# subshells that read them, where a die would only end the subshell).
check_instances() {
    local v n
    for v in PAYMENT_INSTANCES NOTIFIER_INSTANCES; do
        n=${!v:-1}
        [[ "$n" =~ ^[1-9][0-9]*$ ]] && ((n <= MAX_INSTANCES)) ||
            die "$v must be 1..$MAX_INSTANCES (got '$n')"
    done
}

# instance_names SERVICE — its process names: payment, payment-2, …
instance_names() {
    local i n
    n="$(instance_count "$1")"
    printf '%s\n' "$1"
    for ((i = 2; i <= n; i++)); do printf '%s-%s\n' "$1" "$i"; done
}

# nth_port PORT LIST I — the port of instance I: the I-th entry of LIST (comma
# separated, e.g. PAYMENT_PORTS) when given, else PORT + (I-1) × STACK_INSTANCE_PORT_STEP
# (100: 8082, 8182, …; a step of 1 would collide with the next service's default port).
nth_port() {
    local port=$1 list=$2 i=$3 ports=()
    if [[ -n "$list" ]]; then
        IFS=, read -r -a ports <<<"$list"
        [[ "${ports[i - 1]:-}" =~ ^[0-9]+$ ]] || die "port list '$list' has no port for instance $i"
        printf '%s' "${ports[i - 1]}"
    else
        printf '%s' $((port + (i - 1) * ${STACK_INSTANCE_PORT_STEP:-100}))
    fi
}

# Instance names beyond the first that have a PID file (what `down`, `status` and `logs`
# look at besides ALL_SERVICE_NAMES, whatever PAYMENT_INSTANCES says now), plus the
# configured ones.
extra_instances() {
    local f n seen=" "
    for f in "$PID_DIR"/payment-[0-9]*.pid "$PID_DIR"/notifier-[0-9]*.pid; do
        [[ -e "$f" ]] || continue
        n=${f##*/}
        n=${n%.pid}
        seen+="$n "
        printf '%s\n' "$n"
    done
    for n in "${SERVICE_NAMES[@]}"; do
        [[ "$(instance_index "$n")" != 1 && "$seen" != *" $n "* ]] && printf '%s\n' "$n"
    done
    return 0
}

select_services() {
    local payments=() mails=() mail
    check_instances
    mail="$(mail_service)"
    mapfile -t payments < <(instance_names payment)
    if [[ "$mail" == notifier ]]; then
        mapfile -t mails < <(instance_names notifier)
    else
        mails=("$mail")
        (("${NOTIFIER_INSTANCES:-1}" == 1)) || die "NOTIFIER_INSTANCES > 1 needs case 3 or 4 (cases 1-2 run mailer-blocking)"
    fi
    # Case 1's chain calls one payment URL (ORDER_PAYMENT_URL): more would sit idle.
    if [[ "${SAGA_CASE:-3}" == 1 ]] && ((${#payments[@]} > 1)); then
        die "PAYMENT_INSTANCES > 1 needs a Kafka case (2-4); case 1 calls one payment URL"
    fi
    SERVICE_NAMES=(kakaopay-sim "${payments[@]}" order "${mails[@]}")
}

# Names of the processes started by *this* invocation (used by `test` to stop only
# what it started).
STARTED_NOW=()

log() { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[stack] ERROR: %s\n' "$*" >&2
    exit 1
}

# Every setting the stack and the services read, with the local defaults. Exported so
# the processes started from here inherit them. Values already set in the
# environment win.
set_defaults() {
    : "${KAFKA_PORT:=9092}"
    : "${KAFKA_BROKERS:=127.0.0.1:$KAFKA_PORT}"
    : "${KAFKA_TOPIC_PREFIX:=}"
    : "${KAFKA_PARTITIONS:=12}"
    : "${POSTGRES_URL:=postgres://postgres@127.0.0.1:5432}"
    : "${ORDER_HOST:=127.0.0.1}"
    : "${ORDER_PORT:=8081}"
    : "${ORDER_DATABASE_URL:=$POSTGRES_URL/orders}"
    # The load generators and curl examples send free-form lines (name + unit_price);
    # a shop's own deployment leaves this off (the service's default, and compose's).
    : "${ORDER_ALLOW_CUSTOM_ITEMS:=true}"
    : "${PAYMENT_HOST:=127.0.0.1}"
    # A port list names every instance's port; the first is the service's own.
    if [[ -n "${PAYMENT_PORTS:-}" ]]; then PAYMENT_PORT=${PAYMENT_PORTS%%,*}; fi
    if [[ -n "${NOTIFIER_PORTS:-}" ]]; then NOTIFIER_PORT=${NOTIFIER_PORTS%%,*}; fi
    : "${PAYMENT_PORT:=8082}"
    : "${PAYMENT_DATABASE_URL:=$POSTGRES_URL/payments}"
    : "${PAYMENT_PUBLIC_URL:=http://127.0.0.1:$PAYMENT_PORT}"
    : "${PAYMENT_STOREFRONT_URL:=http://127.0.0.1:$ORDER_PORT}"
    : "${KAKAOPAY_SIM_HOST:=127.0.0.1}"
    : "${KAKAOPAY_SIM_PORT:=8089}"
    : "${KAKAOPAY_SIM_MODE:=auto}"
    : "${KAKAOPAY_BASE_URL:=http://127.0.0.1:$KAKAOPAY_SIM_PORT}"
    : "${KAKAOPAY_SECRET_KEY:=DEV-local-secret}"
    : "${KAKAOPAY_SIM_SECRET_KEY:=$KAKAOPAY_SECRET_KEY}"
    : "${KAKAOPAY_CID:=TC0ONETIME}"
    : "${NOTIFIER_HOST:=127.0.0.1}"
    : "${NOTIFIER_PORT:=8083}"
    : "${MONGODB_PORT:=27017}"
    : "${MONGODB_URI:=mongodb://127.0.0.1:$MONGODB_PORT}"
    : "${NOTIFIER_MONGODB_DATABASE:=notifier}"
    : "${SMTP_HOST:=127.0.0.1}"
    : "${SMTP_PORT:=2525}"
    : "${SMTP_MAILDIR:=$STATE/mail}"
    : "${MAIL_FROM:=Saga Shop <shop@example.com>}"
    # The local stack's own credentials, set explicitly here (the services have no
    # default): the history API's and the payment look-ups' tokens, and case 1's
    # event-signing secret, random per state folder (kept in $STATE/secrets so every
    # process of the stack shares it).
    : "${NOTIFIER_API_TOKEN:=local-dev-token}"
    : "${PAYMENT_API_TOKEN:=local-payment-token}"
    : "${INTERNAL_EVENTS_SECRET:=$(local_secret internal-events-secret)}"
    # The order page shows the shopper's mails from the mail service's history.
    : "${ORDER_MAIL_HISTORY_URL:=http://$NOTIFIER_HOST:$NOTIFIER_PORT}"
    : "${ORDER_MAIL_HISTORY_TOKEN:=$NOTIFIER_API_TOKEN}"
    # Cases 1 and 2: the blocking mail service stands where the notifier would.
    : "${MAILER_HOST:=$NOTIFIER_HOST}"
    : "${MAILER_PORT:=$NOTIFIER_PORT}"
    : "${MAILER_DATABASE_URL:=$POSTGRES_URL/mail}"
    # Case 1: where each service delivers its events over HTTP.
    : "${ORDER_PAYMENT_URL:=http://$PAYMENT_HOST:$PAYMENT_PORT}"
    : "${ORDER_MAILER_URL:=http://$MAILER_HOST:$MAILER_PORT}"
    : "${PAYMENT_ORDER_URL:=http://$ORDER_HOST:$ORDER_PORT}"
    : "${PAYMENT_MAILER_URL:=http://$MAILER_HOST:$MAILER_PORT}"
    : "${PROMETHEUS_PORT:=9090}"
    : "${RUST_LOG:=info}"
    : "${SAGA_CASE:=3}"
    : "${STACK_START_TIMEOUT:=30}"
    : "${STACK_READY_TIMEOUT:=60}"
    : "${STACK_STOP_TIMEOUT:=15}"
    : "${PAYMENT_INSTANCES:=1}"
    : "${NOTIFIER_INSTANCES:=1}"
    export KAFKA_PORT KAFKA_BROKERS KAFKA_TOPIC_PREFIX KAFKA_PARTITIONS POSTGRES_URL \
        ORDER_HOST ORDER_PORT ORDER_DATABASE_URL ORDER_ALLOW_CUSTOM_ITEMS \
        PAYMENT_HOST PAYMENT_PORT PAYMENT_DATABASE_URL PAYMENT_PUBLIC_URL PAYMENT_STOREFRONT_URL \
        ORDER_MAIL_HISTORY_URL ORDER_MAIL_HISTORY_TOKEN \
        KAKAOPAY_SIM_HOST KAKAOPAY_SIM_PORT KAKAOPAY_SIM_MODE KAKAOPAY_BASE_URL \
        KAKAOPAY_SECRET_KEY KAKAOPAY_SIM_SECRET_KEY KAKAOPAY_CID \
        NOTIFIER_HOST NOTIFIER_PORT MONGODB_PORT MONGODB_URI NOTIFIER_MONGODB_DATABASE \
        SMTP_HOST SMTP_PORT SMTP_MAILDIR MAIL_FROM NOTIFIER_API_TOKEN PAYMENT_API_TOKEN \
        PROMETHEUS_PORT RUST_LOG SAGA_CASE PAYMENT_INSTANCES NOTIFIER_INSTANCES \
        MAILER_HOST MAILER_PORT MAILER_DATABASE_URL \
        ORDER_PAYMENT_URL ORDER_MAILER_URL PAYMENT_ORDER_URL PAYMENT_MAILER_URL \
        INTERNAL_EVENTS_SECRET
    select_services
}

# A random secret named $1, made once per state folder (mode 600) and printed.
local_secret() {
    local file="$STATE/secrets/$1"
    if [[ ! -s "$file" ]]; then
        mkdir -p "$STATE/secrets"
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    fi
    cat "$file"
}

ensure_state_dirs() {
    mkdir -p "$PID_DIR" "$LOG_DIR" "$DATA_DIR" "$SMTP_MAILDIR"
}

pid_file() { printf '%s/%s.pid' "$PID_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# Prints the PID of <name> when its PID file names a live process whose command line
# contains the recorded token; returns 1 otherwise.
running_pid() {
    local f pid token
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    { read -r pid && read -r token; } <"$f" || true
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Zombies are not running.
    if [[ -r "/proc/$pid/stat" ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]]; then
        return 1
    fi
    if [[ -n "$token" && -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$token" || return 1
    fi
    printf '%s' "$pid"
}

is_running() { running_pid "$1" >/dev/null; }

# True when something accepts TCP connections on 127.0.0.1:<port> (or <host>:<port>).
port_open() {
    local port=$1 host=${2:-127.0.0.1}
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

tail_log() {
    local f
    f="$(log_file "$1")"
    if [[ -f "$f" ]]; then
        printf -- '----- last lines of %s -----\n' "$f" >&2
        tail -n "${2:-30}" "$f" >&2
        printf -- '-----\n' >&2
    fi
}

# start_bg NAME TOKEN WORKDIR CMD [ARGS...]
# Starts CMD in its own session (so a Ctrl-C or the end of the calling shell does not
# take it down), stdout+stderr appended to the log, and records the PID file. A
# process already running under NAME is reused.
start_bg() {
    local name=$1 token=$2 workdir=$3
    shift 3
    local pid logf pidf
    if pid="$(running_pid "$name")"; then
        log "$name already running (pid $pid)"
        return 0
    fi
    pidf="$(pid_file "$name")"
    logf="$(log_file "$name")"
    rm -f "$pidf"
    mkdir -p "$workdir"
    printf '\n===== %s starting %s: %s\n' "$(date '+%F %T')" "$name" "$*" >>"$logf"
    # In a non-interactive shell the background subshell is not a process-group
    # leader, so setsid does not fork: $! is the PID of the program itself.
    (cd "$workdir" && exec setsid "$@" >>"$logf" 2>&1 </dev/null) &
    pid=$!
    printf '%s\n%s\n' "$pid" "$token" >"$pidf"
    STARTED_NOW+=("$name")
    log "started $name (pid $pid, log $logf)"
}

# wait_port NAME PORT [TIMEOUT] — wait until the port accepts connections; fail with
# the log tail when the process dies or the deadline passes.
wait_port() {
    local name=$1 port=$2 timeout=${3:-$STACK_START_TIMEOUT}
    local deadline=$((SECONDS + timeout)) shown=0
    while ! port_open "$port"; do
        if ! is_running "$name"; then
            tail_log "$name"
            die "$name exited before listening on 127.0.0.1:$port (log: $(log_file "$name"))"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$name"
            die "$name did not listen on 127.0.0.1:$port within ${timeout}s (log: $(log_file "$name"))"
        fi
        if ((shown == 0)); then
            log "waiting for $name on 127.0.0.1:$port (up to ${timeout}s)"
            shown=1
        fi
        sleep 0.2
    done
}

# port_taken NAME PORT — returns 1 when PORT is free (start NAME). When a process this
# script did not start already listens there: with STACK_REUSE_FOREIGN=1 (what `test`
# sets) it is reused with a warning (returns 0), otherwise this fails.
port_taken() {
    local name=$1 port=$2
    port_open "$port" || return 1
    if [[ "${STACK_REUSE_FOREIGN:-0}" == 1 ]]; then
        warn "port $port is already served by a process this script did not start: using it as $name"
        return 0
    fi
    die "port $port (for $name) is already in use by a process this script did not start; stop it or set another port (see: ss -ltnp 'sport = :$port')"
}

# stop_one NAME — SIGTERM to the process (its whole process group when it leads one,
# which setsid made it), wait up to STACK_STOP_TIMEOUT, then SIGKILL. Removes the PID
# file.
stop_one() {
    local name=$1 pid pgid target deadline
    local pidf
    pidf="$(pid_file "$name")"
    if ! pid="$(running_pid "$name")"; then
        if [[ -f "$pidf" ]]; then
            log "$name: not running (removing stale PID file)"
            rm -f "$pidf"
        fi
        return 0
    fi
    pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')"
    target="$pid"
    [[ "$pgid" == "$pid" ]] && target="-$pid"
    log "stopping $name (pid $pid)"
    kill -TERM -- "$target" 2>/dev/null || true
    deadline=$((SECONDS + STACK_STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        # A child of this shell that exited is a zombie until reaped: treat as gone.
        if [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]]; then
            break
        fi
        if ((SECONDS >= deadline)); then
            warn "$name (pid $pid) still alive after ${STACK_STOP_TIMEOUT}s: SIGKILL"
            kill -KILL -- "$target" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.2
    done
    rm -f "$pidf"
}

# http_status URL [CURL ARGS...] — prints the HTTP status code (000 when no answer).
http_status() {
    local url=$1
    shift
    curl -s -o /dev/null -m 3 -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}
