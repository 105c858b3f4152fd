# shellcheck shell=bash
# Installs what the local stack needs, idempotently: Debian packages, the Python venv
# (nx-27017 + aiosmtpd, pinned in infra/requirements.txt), the tansu broker and
# diesel_cli (infra/lib/schema.sh).

# Debian packages: the C toolchain bits rdkafka's cmake-build needs, Prometheus (to
# check dashboards' queries), Postfix (for its smtp-sink/smtp-source load tools),
# Chromium and its WebDriver (the storefront's browser tests: e2e/tests/browser), and
# the command-line tools this script uses.
APT_PACKAGES=(cmake libcurl4-openssl-dev libsasl2-dev prometheus postfix jq curl procps chromium chromium-driver)

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_apt_packages() {
    local missing=() p sudo=()
    for p in "${APT_PACKAGES[@]}"; do
        apt_installed "$p" || missing+=("$p")
    done
    command -v psql >/dev/null || missing+=(postgresql-client)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing Debian packages (${missing[*]}) and no apt-get"
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing Debian packages (${missing[*]}); run as root or install them"
        sudo=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    # Postfix is only wanted for its smtp-sink/smtp-source tools: no MTA configuration.
    if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
        echo 'postfix postfix/main_mailer_type select No configuration' | "${sudo[@]}" debconf-set-selections
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The venv is reused while infra/requirements.txt is unchanged (a stamp file holds the
# hash of the requirements it was built from).
install_venv() {
    local req="$INFRA_DIR/requirements.txt" stamp="$VENV/.requirements.sha256" want py
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    py="${STACK_PYTHON:-$(command -v python3 || true)}"
    [[ -n "$py" ]] || die "python3 not found (set STACK_PYTHON)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating Python venv $VENV"
        mkdir -p "$(dirname "$VENV")"
        "$py" -m venv "$VENV"
    fi
    log "installing pinned Python packages into $VENV (infra/requirements.txt)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
    printf '%s\n' "$want" >"$stamp"
}

tansu_ok() {
    [[ -x "$TANSU_BIN" ]] && "$TANSU_BIN" --version 2>/dev/null | grep -qF "$TANSU_VERSION"
}

install_tansu() {
    tansu_ok && return 0
    command -v cargo >/dev/null || die "cargo not found: needed to install tansu $TANSU_VERSION"
    log "installing tansu $TANSU_VERSION with cargo (takes ~10 minutes on 2 cores; once per machine)"
    cargo install --locked tansu --version "$TANSU_VERSION" --features libsql,dynostore >&2
    if ! tansu_ok; then
        # cargo installed somewhere else (e.g. CARGO_INSTALL_ROOT): take it from PATH.
        local found
        found="$(command -v tansu || true)"
        [[ -n "$found" ]] && TANSU_BIN="$found"
    fi
    tansu_ok || die "tansu $TANSU_VERSION not found at $TANSU_BIN after cargo install (set TANSU_BIN)"
}

install_all() {
    install_apt_packages
    install_venv
    install_tansu
    install_diesel_cli
}
