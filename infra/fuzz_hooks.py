"""schemathesis hooks for `infra/stack fuzz` (infra/lib/fuzz.sh): a refused request
changes nothing.

Before every call the service's state is read (FUZZ_STATE, see below); after a 4xx
answer it is read again, and a difference fails the run: bad input must be refused
without a trace. FUZZ_STATE is one of
  sql|<postgres URL>|<query>   the query's output (psql -XAt)
  http|<URL>                   the body of a GET
  (empty)                      nothing to compare (a read-only API)
The fuzzer runs with one worker, so nothing else it sends interleaves; the state read
is chosen so that the shop's own background work (relays, consumers) does not change it
while the fuzzer runs.
"""

import os
import subprocess
import urllib.request

import schemathesis

_before = {}


def _state() -> str:
    kind, _, target = os.environ.get("FUZZ_STATE", "").partition("|")
    if kind == "sql":
        url, _, query = target.partition("|")
        done = subprocess.run(
            ["psql", "-XAtq", url, "-c", query], capture_output=True, text=True, check=True
        )
        return done.stdout
    if kind == "http":
        with urllib.request.urlopen(target, timeout=10) as answer:
            return answer.read().decode()
    return ""


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    _before["state"] = _state()


@schemathesis.check
def refusals_change_nothing(ctx, response, case):
    """A 4xx answer leaves the service's state as it was."""
    if 400 <= response.status_code < 500:
        after = _state()
        if after != _before.get("state"):
            raise AssertionError(
                f"answered {response.status_code} but the state changed:\n"
                f"before: {_before.get('state')!r}\nafter:  {after!r}"
            )
