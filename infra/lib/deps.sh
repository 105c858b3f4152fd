# shellcheck shell=bash
# The dependencies: PostgreSQL (already running; databases created here), tansu
# (Kafka protocol), nx-27017 (MongoDB protocol) and the SMTP sink.

ensure_postgres() {
    local hostport host port
    hostport="${POSTGRES_URL#*://}"
    hostport="${hostport#*@}"
    hostport="${hostport%%/*}"
    host="${hostport%%:*}"
    port="${hostport##*:}"
    [[ "$port" == "$hostport" ]] && port=5432
    if port_open "$port" "$host"; then
        return 0
    fi
    # The machine's own PostgreSQL cluster (Debian), when it is installed but stopped.
    if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
        local ver
        ver="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
        log "PostgreSQL not answering on $host:$port: starting cluster $ver/main"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
        local deadline=$((SECONDS + 20))
        until port_open "$port" "$host"; do
            ((SECONDS < deadline)) || break
            sleep 0.5
        done
    fi
    port_open "$port" "$host" || die "PostgreSQL does not answer on $host:$port (POSTGRES_URL=$POSTGRES_URL)"
}

# Database name of a postgres:// URL (last path segment, without query).
db_name_of() {
    local n="${1%%\?*}"
    printf '%s' "${n##*/}"
}

create_databases() {
    local db
    for db in "$(db_name_of "$ORDER_DATABASE_URL")" "$(db_name_of "$PAYMENT_DATABASE_URL")" \
        "$(db_name_of "$MAILER_DATABASE_URL")"; do
        [[ "$db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "unexpected database name '$db'"
        if [[ "$(psql "$POSTGRES_URL/postgres" -X -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
            log "creating PostgreSQL database $db"
            psql "$POSTGRES_URL/postgres" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >&2
        fi
    done
}

start_tansu() {
    local dir="$DATA_DIR/tansu"
    if ! is_running tansu && ! port_taken tansu "$KAFKA_PORT"; then
        # The sqlite path is relative to the working folder: $STATE/data/tansu/tansu.db.
        # Explicit flags win over tansu's env settings (CLUSTER_ID, LISTENER_URL, ...).
        # At RUST_LOG=info tansu logs several lines per request: TANSU_LOG (warn).
        start_bg tansu "$TANSU_BIN" "$dir" \
            env -u SCHEMA_REGISTRY RUST_LOG="${TANSU_LOG:-warn}" "$TANSU_BIN" broker \
            --cluster-id saga-shop \
            --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --storage-engine "${TANSU_STORAGE_ENGINE:-sqlite://tansu.db}"
    fi
    wait_port tansu "$KAFKA_PORT"
}

start_mongodb() {
    local dir="$DATA_DIR/mongodb"
    if ! is_running mongodb && ! port_taken mongodb "$MONGODB_PORT"; then
        # One SQLite file per logical database under $STATE/data/mongodb/db. The server
        # writes its log to stdout too, so its own log file is discarded.
        start_bg mongodb nx-27017 "$dir" \
            "$VENV/bin/nx-27017" --host 127.0.0.1 --port "$MONGODB_PORT" \
            --data-dir "$dir/db" --log-file /dev/null --pid-file "$dir/nx-27017.pid"
    fi
    wait_port mongodb "$MONGODB_PORT"
}

start_smtp() {
    if ! is_running smtp; then
        if port_taken smtp "$SMTP_PORT"; then
            adopt_foreign_maildir
        else
            start_bg smtp smtp_sink.py "$DATA_DIR" \
                "$VENV/bin/python" "$INFRA_DIR/smtp_sink.py" \
                --host 127.0.0.1 --port "$SMTP_PORT" --maildir "$SMTP_MAILDIR"
        fi
    fi
    wait_port smtp "$SMTP_PORT"
}

# A reused SMTP sink writes mail to its own Maildir, not to ours: the tests read mail
# from SMTP_MAILDIR, so point it at the sink's (from its --maildir argument), or refuse
# a server whose Maildir cannot be known.
adopt_foreign_maildir() {
    local pid maildir
    pid="$(ss -Hltnp "sport = :$SMTP_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] ||
        die "port $SMTP_PORT is served by a process whose Maildir cannot be found; stop it or set SMTP_PORT"
    maildir="$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^--maildir$/{n;p;q}')"
    [[ -z "$maildir" || "$maildir" == /* ]] || maildir="$(readlink "/proc/$pid/cwd")/$maildir"
    [[ -n "$maildir" && -d "$maildir" ]] ||
        die "port $SMTP_PORT is served by pid $pid, which is not smtp_sink.py with --maildir; stop it or set SMTP_PORT"
    SMTP_MAILDIR="$maildir"
    export SMTP_MAILDIR
    warn "reading mail from the reused SMTP sink's Maildir: $SMTP_MAILDIR"
}

kafka_topics() {
    printf '%s\n' "${KAFKA_TOPIC_PREFIX}orders.v1" "${KAFKA_TOPIC_PREFIX}payments.v1" "${KAFKA_TOPIC_PREFIX}deadletter.v1"
}

# Creates the topics (KAFKA_PARTITIONS partitions) that `tansu topic list` does not
# show. The services also create missing topics themselves through the admin API.
create_topics() {
    local topic out existing
    # The CLI logs through RUST_LOG to stdout: keep it quiet, keep only the JSON line.
    existing="$(RUST_LOG=error "$TANSU_BIN" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" 2>/dev/null |
        grep '^\[' | jq -r '.[].name' 2>/dev/null || true)"
    while read -r topic; do
        grep -qxF -- "$topic" <<<"$existing" && continue
        if out="$(RUST_LOG=error "$TANSU_BIN" topic create "$topic" \
            --broker "tcp://127.0.0.1:$KAFKA_PORT" \
            --partitions "$KAFKA_PARTITIONS" 2>&1)"; then
            log "topic $topic: created ($KAFKA_PARTITIONS partitions)"
        elif grep -qi 'already exists' <<<"$out"; then
            :
        else
            printf '%s\n' "$out" >&2
            die "could not create topic $topic"
        fi
    done < <(kafka_topics)
}

start_deps() {
    ensure_state_dirs
    ensure_postgres
    create_databases
    start_tansu
    start_mongodb
    start_smtp
    create_topics
}

stop_deps() {
    local i
    for ((i = ${#DEP_NAMES[@]} - 1; i >= 0; i--)); do
        stop_one "${DEP_NAMES[i]}"
    done
}
