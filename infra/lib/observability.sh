# shellcheck shell=bash
# Observability files: static checks (Prometheus config and alert rules with promtool,
# docker-compose.yml with infra/compose_check.py) and a local Prometheus scraping the
# stack the `up` verb runs.

# promtool check config / check rules / test rules, then the compose check. Cheap (no
# server, no build): `test` runs it before cargo.
check_observability() {
    local prom="$INFRA_DIR/prometheus"
    command -v promtool >/dev/null || die "promtool not found (Debian package prometheus)"
    log "promtool: Prometheus configs, alert rules and their unit tests"
    promtool check config "$prom/prometheus.yml" >/dev/null || die "infra/prometheus/prometheus.yml is invalid"
    promtool check config "$prom/prometheus.compose.yml" >/dev/null || die "infra/prometheus/prometheus.compose.yml is invalid"
    promtool check rules "$prom/alerts.yml" >/dev/null || die "infra/prometheus/alerts.yml is invalid"
    (cd "$prom" && promtool test rules alerts.test.yml) >/dev/null || {
        (cd "$prom" && promtool test rules alerts.test.yml) >&2 || true
        die "alert rule unit tests failed (infra/prometheus/alerts.test.yml)"
    }
    log "compose check: infra/docker-compose.yml"
    "$VENV/bin/python" "$INFRA_DIR/compose_check.py" >&2 || die "infra/docker-compose.yml is inconsistent (see above)"
    "$VENV/bin/python" "$INFRA_DIR/compose_check.py" --self-test >&2 || die "the compose check does not refuse what it must (see above)"
}

cmd_check() {
    (($# == 0)) || die "check takes no options"
    install_venv
    check_observability
    log "observability files OK"
}

# Prometheus in the foreground on 127.0.0.1:$PROMETHEUS_PORT, scraping the services on
# their configured ports every 15 s with the repository's alert rules; data in
# $STATE/data/prometheus. Ctrl-C stops it.
cmd_prometheus() {
    (($# == 0)) || die "prometheus takes no options"
    command -v prometheus >/dev/null || die "prometheus not found (Debian package prometheus)"
    local dir="$STATE/prometheus"
    mkdir -p "$dir" "$DATA_DIR/prometheus"
    sed -e "s#127.0.0.1:8081#$ORDER_HOST:$ORDER_PORT#" \
        -e "s#127.0.0.1:8082#$PAYMENT_HOST:$PAYMENT_PORT#" \
        -e "s#127.0.0.1:8083#$NOTIFIER_HOST:$NOTIFIER_PORT#" \
        -e "s#^  - alerts.yml#  - $INFRA_DIR/prometheus/alerts.yml#" \
        "$INFRA_DIR/prometheus/prometheus.yml" >"$dir/prometheus.yml"
    promtool check config "$dir/prometheus.yml" >/dev/null || die "generated $dir/prometheus.yml is invalid"
    log "Prometheus on http://127.0.0.1:$PROMETHEUS_PORT (config $dir/prometheus.yml); Ctrl-C stops it"
    exec prometheus --config.file="$dir/prometheus.yml" \
        --storage.tsdb.path="$DATA_DIR/prometheus" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
        --log.level=warn
}
