"""Issue 10 re-audit, item 4: a server that echoed the token in a 500 body as PHP's JSON
(`Tok\\/en+Zeb=ra9`) or lowercase percent-encoding (`Tok%2fen%2bZeb%3dra9`) had it stored
and shown unmasked.  A real HTTP server replies; the whole state directory and the report
are searched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.masking import forms
from tests.engine.helpers import runbook_yaml
from tests.servers.http import HttpServer

SECRET = "Tok/en+Zeb=ra9"
ECHOES = {
    "php": "Tok\\/en+Zeb=ra9",
    "pct": "Tok%2fen%2bZeb%3dra9",
    "pct_upper_secret": "TOK%2fEN%2bZEB%3dRA9",
}


def test_masking_forms_cover_lowercase_percent_json_slash_and_unicode_escapes() -> None:
    f = forms(SECRET)
    assert set(ECHOES.values()) <= f
    assert "T\\u00F6ken\\/x" in forms("Töken/x") and "T\\u00f6ken\\/x" in forms("Töken/x")


@pytest.mark.parametrize("mode", sorted(ECHOES))
def test_a_secret_echoed_as_php_json_or_lowercase_percent_in_a_500_body_is_masked(
    runbook: Any, monkeypatch: pytest.MonkeyPatch, http_server: HttpServer, mode: str
) -> None:
    monkeypatch.setenv("TOK", SECRET)
    echoed = ECHOES[mode]
    http_server.respond(f"/{mode}", 500, text=f'{{"error": "bad token {echoed}"}}')
    Path("r.yaml").write_text(
        runbook_yaml(
            name="h",
            secrets={"tok": {"env": "TOK"}},
            phases=[
                {
                    "id": "p",
                    "steps": [
                        {
                            "id": "call",
                            "action": "http",
                            "with": {
                                "url": f"{http_server.url}/{mode}",
                                "headers": {"Authorization": "Bearer {{ secrets.tok }}"},
                            },
                            "rollback": "none",
                        }
                    ],
                }
            ],
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert http_server.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
    rep = runbook("report", "r.yaml", "--format", "json")
    assert rep.code == 0, rep.output
    assert "bad token" in rep.out or "bad token" in json.dumps(rep.out)
    disk = b"".join(p.read_bytes() for p in Path(".runbook").rglob("*") if p.is_file())
    for text in (r.output, rep.output):
        assert echoed not in text and echoed.lower() not in text.lower(), text
    assert echoed.encode() not in disk and echoed.lower().encode() not in disk.lower()
