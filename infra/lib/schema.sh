# shellcheck shell=bash
# The Diesel schema files are generated from the migrations (`diesel print-schema`), never
# written by hand: `infra/stack schema` writes them, `infra/stack schema --check` (run by
# `infra/stack test`) fails when a committed file differs from what the migrations make.
#
# Each file holds the tables of one owner, from a fresh database migrated the way that
# service migrates at start-up (the common migrations, then its own):
#   shared-events/src/schema.rs      outbox, processed_events   (common)
#   order/src/schema.rs              orders, order_items, saga_steps, products,
#                                    order_idempotency_keys
#   payment/src/schema.rs            payments, gateway_calls
#   notifier/blocking/src/schema.rs  mail_history

# owner file | migration folders (after common) | tables (anchored regexes for -o)
SCHEMA_FILES=(
    "shared-events/src/schema.rs||^outbox$ ^processed_events$"
    "order/src/schema.rs|order|^orders$ ^order_items$ ^saga_steps$ ^products$ ^order_idempotency_keys$"
    "payment/src/schema.rs|payment|^payments$ ^gateway_calls$"
    "notifier/blocking/src/schema.rs|mail|^mail_history$"
)

install_diesel_cli() {
    diesel_cli_ok && return 0
    command -v cargo >/dev/null || die "cargo not found: needed to install diesel_cli $DIESEL_CLI_VERSION"
    log "installing diesel_cli $DIESEL_CLI_VERSION with cargo (PostgreSQL only; a few minutes, once per machine)"
    cargo install --locked diesel_cli --version "$DIESEL_CLI_VERSION" \
        --no-default-features --features postgres >&2
    diesel_cli_ok || die "diesel $DIESEL_CLI_VERSION not found at $DIESEL_BIN after cargo install (set DIESEL_BIN)"
}

diesel_cli_ok() {
    [[ -x "$DIESEL_BIN" ]] && "$DIESEL_BIN" --version 2>/dev/null | grep -qF "$DIESEL_CLI_VERSION"
}

# schema_print SERVICE_FOLDER TABLES… : the generated file's text on stdout.
schema_print() {
    local folder=$1 url db
    shift
    db="schema_$(date +%s%N)_$$"
    url="$POSTGRES_URL/$db"
    psql -q -v ON_ERROR_STOP=1 "$POSTGRES_URL/postgres" -c "CREATE DATABASE \"$db\"" >/dev/null
    # shellcheck disable=SC2064 # the name is fixed now
    trap "psql -q '$POSTGRES_URL/postgres' -c 'DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)' >/dev/null" RETURN
    "$DIESEL_BIN" migration run --database-url "$url" \
        --migration-dir "$STACK_ROOT/diesel-migrations/common" >/dev/null
    if [[ -n "$folder" ]]; then
        "$DIESEL_BIN" migration run --database-url "$url" \
            --migration-dir "$STACK_ROOT/diesel-migrations/$folder" >/dev/null
    fi
    # --config-file /dev/null: no diesel.toml is read, whatever the working directory.
    "$DIESEL_BIN" print-schema --config-file /dev/null --database-url "$url" -o "$@"
}

cmd_schema() {
    local check=""
    case ${1:-} in
        --check) check=1 ;;
        "") ;;
        *) die "schema takes only --check" ;;
    esac
    install_diesel_cli
    local entry file folder tables fresh stale=()
    for entry in "${SCHEMA_FILES[@]}"; do
        IFS='|' read -r file folder tables <<<"$entry"
        # shellcheck disable=SC2086 # the table list is words on purpose
        fresh="$(schema_print "$folder" $tables)"
        if [[ -n "$check" ]]; then
            if ! diff -u "$STACK_ROOT/$file" <(printf '%s\n' "$fresh") >&2; then
                stale+=("$file")
            fi
        else
            printf '%s\n' "$fresh" >"$STACK_ROOT/$file"
            log "wrote $file"
        fi
    done
    ((${#stale[@]} == 0)) || die "schema files differ from the migrations: ${stale[*]} (run 'infra/stack schema')"
    [[ -z "$check" ]] || log "schema files match the migrations"
}
