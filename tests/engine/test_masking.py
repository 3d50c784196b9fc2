"""SPEC §9: a secret is masked in every form the built-in filters give it, and before any cut.

The canary ``s3cr'et p@ss`` (a quote, a space, an ``@``: every encoding changes it) goes through
every built-in filter, a URL and a cut error message in a real run; then every byte the run
left (state folder, journal, stdout, stderr, reports) is searched for any form of it."""

from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from runbook_engine.masking import Masker
from tests.engine.helpers import runbook_yaml, sh
from tests.servers.http import HttpServer

CANARY = "s3cr'et p@ss"


def _forms(secret: str) -> set[str]:
    """What a reader could recognise the secret by (computed here independently)."""
    out: set[str] = set()
    for s in (secret, secret.upper(), secret.lower()):
        out |= {
            s,
            shlex.quote(s),
            quote(s, safe=""),
            quote(s, safe="/"),
            quote_plus(s),
            json.dumps(s)[1:-1],
            json.dumps(s).replace("'", "\\u0027")[1:-1],
            html.escape(s),
            base64.b64encode(s.encode()).decode(),
        }
    return out


def _leaks(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace")
    found = [f for f in _forms(CANARY) if f in text]
    if "s3cr" in text.lower():  # any beginning of the secret, cut or not
        found.append("s3cr")
    # the base64 of "admin:" + the secret, and the part of it only the secret decides
    b64 = base64.b64encode(b"admin:" + CANARY.encode()).decode()
    found += [b64[8:20]] if b64[8:20] in text else []
    return found


@pytest.mark.servers
def test_secret_canary_is_masked_in_every_derived_form_everywhere(
    runbook: Any, monkeypatch: pytest.MonkeyPatch, http_server: HttpServer
) -> None:
    monkeypatch.setenv("CANARY_PW", CANARY)
    pad = "x" * 86  # puts the secret across the 100-character cut of a shell error message
    filters = [
        "secrets.pw",
        "secrets.pw | upper",
        "secrets.pw | lower",
        "secrets.pw | urlencode",
        "secrets.pw | tojson",
        "secrets.pw | b64encode",
        "secrets.pw | e",
        "(secrets.pw | quote) ~ ''",  # the quoted form itself, printed
        "('admin:' ~ secrets.pw) | b64encode",
    ]
    printing = "printf '%s\\n' " + " ".join(f"{{{{ {f} }}}}" for f in filters)
    url = http_server.url
    doc = runbook_yaml(
        "canary",
        secrets={"pw": {"env": "CANARY_PW"}},
        risks=[{"id": "r", "likelihood": "low", "impact": "low", "contingencies": ["tell"]}],
        contingencies=[
            {
                "id": "tell",
                "action": "shell",
                "with": {"command": "echo {{ failed_step.error }}; echo {{ secrets.pw | upper }}"},
            }
        ],
        phases=[
            {
                "id": "p",
                "parallel": True,
                "steps": [
                    sh("forms", printing),
                    sh("cut", f"echo {pad} {{{{ secrets.pw }}}}; exit 3", on_failure="continue"),
                    {
                        "id": "call",
                        "action": "http",
                        "with": {
                            "url": url + "/p/{{ secrets.pw }}?q={{ secrets.pw }}",
                            "headers": {"X-Token": "{{ secrets.pw | b64encode }}"},
                            "expect_status": 201,
                        },
                        "risks": ["r"],
                        "on_failure": "continue",
                        "rollback": "none",
                    },
                    sh(
                        "stderr",
                        "echo {{ secrets.pw | tojson }} >&2; exit 1",
                        on_failure="continue",
                    ),
                ],
            }
        ],
    )
    Path("r.yaml").write_text(doc)
    seen: list[bytes] = []
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    seen += [r.out.encode(), r.err.encode()]
    # the secret was there, in its forms, and masked
    forms = json.loads(runbook("status", "r.yaml", "--format", "json").out)
    stdout = next(s for s in forms["steps"] if s["id"] == "forms")["outputs"]["stdout"]
    lines = stdout.splitlines()
    # every form a template made of the secret is masked whole (the sandbox told the masker),
    # the JSON quotes of `tojson` and the base64 of "admin:" + secret included
    assert lines[:9] == ["***"] * 9, stdout
    cut = next(s for s in forms["steps"] if s["id"] == "cut")
    assert cut["error"].startswith(f"`echo {pad[:80]}") and "s3cr" not in cut["error"]
    assert len(http_server.requests) == 1  # the request went out with the real secret
    for args in (
        ("status", "r.yaml"),
        ("status", "r.yaml", "--format", "json"),
        ("report", "r.yaml"),
        ("report", "r.yaml", "--format", "json"),
        ("report", "r.yaml", "--format", "html", "--output", "report.html"),
        ("apply", "r.yaml", "--dry-run"),
    ):
        res = runbook(*args)
        seen += [res.out.encode(), res.err.encode()]
    seen.append(Path("report.html").read_bytes())
    files = [p for p in Path(".runbook").rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files)
    seen += [p.read_bytes() for p in files]
    leaks = [leak for data in seen for leak in _leaks(data)]
    assert leaks == []


def test_masking_happens_before_a_cut_at_either_end() -> None:
    masker = Masker({"pw": CANARY})
    text = "a" * 95 + CANARY + "b" * 95
    head = masker.head(text, 100)
    tail = masker.tail(text, 100)
    assert head == "a" * 95 + "***" + "bb" and tail == "aa" + "***" + "b" * 95
    for cut in range(1, len(text)):
        assert "s3cr" not in masker.head(text, cut) and "p@ss" not in masker.tail(text, cut)


def test_masking_every_record_stays_cheap() -> None:
    """Masking runs on every record: the forms are computed once, each search is C-speed."""
    import time

    masker = Masker({f"s{i}": f"{CANARY}-{i}" for i in range(5)})
    record = json.dumps({"t": "step", "id": "copy[pilot]", "status": "succeeded", "n": 1}) * 3
    # CPU time of this process: what masking costs, whatever else runs on the machine
    start = time.process_time()
    for _ in range(10_000):
        masker.mask(record)
    per_record = (time.process_time() - start) / 10_000
    assert per_record < 100e-6, f"{per_record * 1e6:.1f} µs per record"
