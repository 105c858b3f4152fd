#!/usr/bin/env python3
"""Local SMTP sink for the saga shop: a real SMTP server (aiosmtpd) that keeps every
accepted message as one file in a Maildir, so tests and `infra/stack demo` can read
what the notifier sent.

Failure injection, by recipient address (regular expressions, case-insensitive,
matched with re.search against the bare address `local@domain`):

  SMTP_SINK_TEMPFAIL_RE  default '^tempfail'  -> RCPT TO answered '451 4.3.0 ...'
  SMTP_SINK_REJECT_RE    default '^reject'    -> RCPT TO answered '550 5.1.1 ...'

An empty value disables that rule.

Slow server (the experiment's slow-SMTP scenario):

  SMTP_SINK_DELAY_MS     default 0  -> wait this long after the DATA payload before
                                       answering 250 (each session waits on its own;
                                       other sessions are not held up)
 A message is stored when at least one recipient
was accepted; the file then starts with these trace headers, added by the sink:

  Return-Path: <envelope sender>
  Delivered-To: <first accepted recipient>
  X-RcptTo: <all accepted recipients, comma separated>
  X-Peer: <client ip>

Usage:
  python infra/smtp_sink.py [--host 127.0.0.1] [--port 2525] [--maildir DIR]
Defaults come from SMTP_HOST, SMTP_PORT and SMTP_MAILDIR. Stops cleanly on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import mailbox
import os
import re
import signal
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

LOG = logging.getLogger("smtp_sink")


def _compile(env_name: str, default: str) -> re.Pattern[str] | None:
    value = os.environ.get(env_name, default)
    if not value:
        return None
    return re.compile(value, re.IGNORECASE)


class MaildirSink:
    """aiosmtpd handler: recipient-based failure injection + Maildir storage."""

    def __init__(self, maildir: str) -> None:
        self.maildir_path = maildir
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), mode=0o700, exist_ok=True)
        self.maildir = mailbox.Maildir(maildir, create=False)
        self.tempfail = _compile("SMTP_SINK_TEMPFAIL_RE", "^tempfail")
        self.reject = _compile("SMTP_SINK_REJECT_RE", "^reject")
        self.delay = max(0, int(os.environ.get("SMTP_SINK_DELAY_MS", "0") or "0")) / 1000.0
        self.stored = 0

    async def handle_RCPT(  # noqa: N802 (aiosmtpd hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.tempfail is not None and self.tempfail.search(address):
            LOG.info("RCPT %s -> 451 (tempfail rule)", address)
            return "451 4.3.0 Temporary failure for <%s> (smtp_sink tempfail rule)" % address
        if self.reject is not None and self.reject.search(address):
            LOG.info("RCPT %s -> 550 (reject rule)", address)
            return "550 5.1.1 Mailbox <%s> rejected (smtp_sink reject rule)" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        if isinstance(content, str):  # decode_data=True would give str
            content = content.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        rcpts = list(envelope.rcpt_tos)
        trace = (
            "Return-Path: <%s>\r\n"
            "Delivered-To: %s\r\n"
            "X-RcptTo: %s\r\n"
            "X-Peer: %s\r\n" % (envelope.mail_from or "", rcpts[0] if rcpts else "", ", ".join(rcpts), peer)
        ).encode("utf-8", "surrogateescape")
        if self.delay:
            await asyncio.sleep(self.delay)
        key = self.maildir.add(trace + content)
        self.stored += 1
        LOG.info("stored %s from=%s to=%s bytes=%d", key, envelope.mail_from, ",".join(rcpts), len(content))
        return "250 2.0.0 Message accepted for delivery"


async def _serve(host: str, port: int, maildir: str) -> None:
    handler = MaildirSink(maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=True, hostname="smtp-sink.local"),
        host=host,
        port=port,
        reuse_address=True,
    )
    LOG.info(
        "listening on %s:%d, maildir %s, delay %d ms, tempfail=%r reject=%r",
        host,
        port,
        maildir,
        int(handler.delay * 1000),
        handler.tempfail.pattern if handler.tempfail else None,
        handler.reject.pattern if handler.reject else None,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    LOG.info("stopping; %d message(s) stored this run", handler.stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SMTP sink storing mail in a Maildir")
    parser.add_argument("--host", default=os.environ.get("SMTP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "2525")))
    parser.add_argument("--maildir", default=os.environ.get("SMTP_MAILDIR", "./mail"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("SMTP_SINK_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # aiosmtpd logs every SMTP command at INFO under "mail.log"; keep it quieter.
    logging.getLogger("mail.log").setLevel(os.environ.get("SMTP_SINK_PROTOCOL_LOG_LEVEL", "WARNING"))
    asyncio.run(_serve(args.host, args.port, args.maildir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
