# shellcheck shell=bash
# `infra/stack demo`: one order, walked from POST /orders to the mails, with curl.

demo_step() {
    if [[ -t 1 ]]; then
        printf '\n\033[1m== %s\033[0m\n' "$*"
    else
        printf '\n== %s\n' "$*"
    fi
}

# Subjects (RFC 2047-decoded) of the Maildir messages addressed to $1.
maildir_subjects() {
    "${STACK_PYTHON:-python3}" - "$SMTP_MAILDIR" "$1" <<'PY'
import email, email.header, email.policy, os, sys
maildir, rcpt = sys.argv[1], sys.argv[2].lower()
found = 0
for sub in ("new", "cur"):
    d = os.path.join(maildir, sub)
    if not os.path.isdir(d):
        continue
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        rcpts = [r.strip().lower() for r in str(msg.get("X-RcptTo", "")).split(",")]
        if rcpt in rcpts:
            found += 1
            print("  %s  Subject: %s" % (os.path.join(sub, name), msg.get("Subject", "")))
if not found:
    print("  (no mail for %s in %s)" % (rcpt, maildir))
PY
}

# One long poll of GET $order_url/orders/$1: with the last ETag ($etag) it asks the
# order service to wait (Prefer: wait) until the order differs from it, so each answer
# comes as soon as the order changes; without one it reads the order at once. Leaves the
# body in $order and its tag in $etag (callers declare both). $2 names a file for the
# response headers. The order's token ($token, from POST /orders) shows the shopper's
# full view; without it the order service shows only the public one.
demo_watch_order() {
    local id="$1" headers="$2" ask=(-H "Authorization: Bearer $token")
    [[ -n "$etag" ]] && ask+=(-H "Prefer: wait=20" -H "If-None-Match: $etag")
    if ! order="$(curl -sS -m 30 -D "$headers" "${ask[@]}" "$order_url/orders/$id")"; then
        sleep 1 # order-service unreachable: do not spin
        order=""
        return
    fi
    etag="$(awk 'tolower($1) == "etag:" {print $2}' "$headers" | tr -d '\r')"
}

cmd_demo() {
    local timeout="${STACK_DEMO_TIMEOUT:-60}"
    parse_case "$@"
    if services_running; then
        check_running_case
        log "stack already running (case $SAGA_CASE)"
    else
        cmd_up "$@"
    fi
    local order_url notifier_url email body hdr code location id token
    order_url="$(service_url order)"
    notifier_url="$(service_url "$(mail_service)")"
    email="shopper-$(date +%s)-$RANDOM@example.com"
    body="$(jq -n --arg email "$email" '{
        customer_id: "demo-customer",
        customer_email: $email,
        items: [
            {sku: "house-blend-200g", quantity: 1},
            {sku: "paper-filters-100", quantity: 2}
        ]}')"
    hdr="$STATE/demo-response-headers.txt"

    demo_step "1. POST $order_url/orders"
    printf '%s\n' "$body"
    local resp
    # One key per checkout: retrying this request can never place a second order.
    resp="$(curl -sS -m 10 -D "$hdr" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: demo-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
        -d "$body" "$order_url/orders")" ||
        die "POST /orders failed"
    code="$(awk 'toupper($1) ~ /^HTTP/ {c=$2} END {print c}' "$hdr")"
    location="$(awk 'tolower($1) == "location:" {print $2}' "$hdr" | tr -d '\r')"
    printf 'HTTP %s  Location: %s\n' "$code" "$location"
    jq . <<<"$resp" 2>/dev/null || printf '%s\n' "$resp"
    [[ "$code" == 202 ]] || die "expected 202 Accepted, got $code"
    id="$(jq -r '.id // empty' <<<"$resp" 2>/dev/null || true)"
    [[ -n "$id" ]] || id="${location##*/}"
    [[ -n "$id" ]] || die "no order id in the response"
    # The shopper's capability for this order: shown once, needed to see it all or cancel.
    token="$(jq -r '.access_token // empty' <<<"$resp" 2>/dev/null || true)"
    [[ -n "$token" ]] || die "no access_token in the response"

    demo_step "2. GET /orders/$id with Prefer: wait until payment.redirect_url is present"
    local order status="" last="" redirect="" deadline=$((SECONDS + timeout)) etag
    etag="$(awk 'tolower($1) == "etag:" {print $2}' "$hdr" | tr -d '\r')"
    order="$resp"
    while :; do
        status="$(jq -r '.status // empty' <<<"$order" 2>/dev/null || true)"
        redirect="$(jq -r '.payment.redirect_url // empty' <<<"$order" 2>/dev/null || true)"
        [[ "$status" != "$last" ]] && printf '  status %s\n' "$status" && last="$status"
        [[ -n "$redirect" ]] && break
        [[ "$status" == CANCELLED ]] && {
            jq . <<<"$order"
            die "order cancelled before payment was ready"
        }
        ((SECONDS < deadline)) || die "no payment.redirect_url after ${timeout}s (last: $order)"
        demo_watch_order "$id" "$hdr"
    done
    jq . <<<"$order"

    demo_step "3. The shopper approves: curl -sL $redirect"
    curl -sSL -m 15 -o /dev/null \
        -w '  followed %{num_redirects} redirect(s), ended at %{url_effective} with HTTP %{http_code}\n' \
        "$redirect" || die "following the redirect failed"

    demo_step "4. GET /orders/$id with Prefer: wait until COMPLETED"
    deadline=$((SECONDS + timeout))
    last=""
    while :; do
        demo_watch_order "$id" "$hdr"
        status="$(jq -r '.status // empty' <<<"$order" 2>/dev/null || true)"
        [[ "$status" != "$last" ]] && printf '  status %s\n' "$status" && last="$status"
        [[ "$status" == COMPLETED ]] && break
        [[ "$status" == CANCELLED ]] && {
            jq . <<<"$order"
            die "order was cancelled"
        }
        ((SECONDS < deadline)) || die "order not COMPLETED after ${timeout}s (last: $order)"
    done
    jq . <<<"$order"

    demo_step "5. GET $notifier_url/notifications?order_id=$id until the mails show up"
    local notes count prev=-1 stable_since=0
    deadline=$((SECONDS + timeout))
    while :; do
        notes="$(curl -sS -m 5 -H "Authorization: Bearer $NOTIFIER_API_TOKEN" \
            "$notifier_url/notifications?order_id=$id" || true)"
        count="$(jq 'if type == "array" then length else ((.items // .notifications // .data // []) | length) end' \
            <<<"$notes" 2>/dev/null || echo 0)"
        if [[ "$count" != "$prev" ]]; then
            printf '  %s record(s)\n' "$count"
            prev="$count"
            stable_since=$SECONDS
        fi
        # Done once there is at least one record and the count stayed the same for 3 s.
        ((count > 0 && SECONDS - stable_since >= 3)) && break
        if ((SECONDS >= deadline)); then
            ((count > 0)) && break
            die "no notification for order $id after ${timeout}s (last: $notes)"
        fi
        sleep 0.5
    done
    jq . <<<"$notes"

    demo_step "6. Mails in the Maildir for $email"
    maildir_subjects "$email"
    printf '\nDone: order %s is COMPLETED and mailed (case %s).\n' "$id" "$SAGA_CASE"
    printf '\nNow shop in a browser: %s/shop\n' "$order_url"
    printf '  The Kakao Pay simulator approves at once (auto mode); to choose approve or cancel on its page:\n'
    printf "  curl -X PUT %s/__sim/faults -H 'content-type: application/json' -d '{\"mode\": \"manual\"}'\n" \
        "$(service_url kakaopay-sim)"
}
