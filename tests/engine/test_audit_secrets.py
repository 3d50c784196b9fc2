"""The holes the audit of issue 10 found in the masking of secrets, each closed and named here:
the masker corrupted the state (item 3), derived forms leaked (item 4), the crash handler
leaked (item 8), and `plan` misstated commands and showed passwords (item 10)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.engine.helpers import journal, runbook_yaml, sh, status_json
from tests.plugins.test_web_security import Recorder, two_hosts  # noqa: F401 - a fixture

CANARY = "s3cr'et p@ss-ünï"
STATUSES = {
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "waiting",
    "unknown",
    "rolling_back",
    "rolled_back",
    "rollback_failed",
}


def _everything() -> bytes:
    """Every byte a run left in the state folder."""
    return b"".join(p.read_bytes() for p in Path(".runbook").rglob("*") if p.is_file())


# -- item 3: the masker never touches the engine's own fields -----------------------------------


@pytest.mark.parametrize("short", ["ing", "e", "1", "2026"])
def test_a_secret_too_short_to_mask_is_refused_before_anything_runs(
    runbook: Any, monkeypatch: pytest.MonkeyPatch, short: str
) -> None:
    monkeypatch.setenv("CANARY", short)
    Path("r.yaml").write_text(
        runbook_yaml(
            secrets={"s": {"env": "CANARY"}},
            phases=[{"id": "p", "steps": [sh("one", "echo token {{ secrets.s | length }}")]}],
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 2
    assert "secret 's' is shorter than 6 characters: it could not be masked" in r.err
    assert not Path(".runbook").exists()


def test_a_secret_that_is_an_engine_word_or_a_run_id_never_corrupts_the_state(
    runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CANARY=ing` made a status `runn***` (the run could never resume); a secret that is the
    beginning of today's run ids masked every run id.  Engine fields are never masked."""
    today = time.strftime("%Y%m%d", time.gmtime())  # every run id of today starts with it
    for secret in ("succeeded", today):
        monkeypatch.setenv("CANARY", secret)
        Path("r.yaml").write_text(
            runbook_yaml(
                secrets={"s": {"env": "CANARY"}},
                phases=[
                    {
                        "id": "p",
                        "steps": [
                            sh("one", "echo uses {{ secrets.s | length }} characters"),
                            sh("two", f"echo hello {secret} world"),
                        ],
                    }
                ],
            )
        )
        r = runbook("apply", "r.yaml", "--yes")
        assert r.code == 0, r.output
        doc = status_json(runbook, "r.yaml")
        assert re.fullmatch(rf"{today}T\d{{6}}Z-[0-9a-f]{{4}}", doc["run"]["id"]), doc["run"]
        assert doc["run"]["status"] == "succeeded"
        assert [s["status"] for s in doc["steps"]] == ["succeeded", "succeeded"]
        two = doc["steps"][1]
        assert two["outputs"]["stdout"] == "hello *** world\n"  # free text is masked
        recs = journal(".runbook", "t")
        assert {r["status"] for r in recs if r["t"] == "step"} <= STATUSES
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", r["digest"]) for r in recs if "digest" in r)
        assert all(r["run"] == doc["run"]["id"] for r in recs if r.get("run"))
        again = runbook("apply", "r.yaml", "--yes")
        assert again.code == 0 and "nothing to do" in again.out, again.output
        for p in Path(".runbook").rglob("*"):
            if p.is_file():
                p.unlink()


# -- item 4: every form a template makes of a secret is masked, or refused ----------------------

ALLOWED = [
    "secrets.s",
    "secrets.s | quote",
    "secrets.s | urlencode",
    "secrets.s | urlencode | lower",
    "secrets.s | urlencode | upper",
    "secrets.s | tojson",
    "secrets.s | tojson | lower",
    "secrets.s | b64encode",
    "secrets.s | b64encode | lower",
    "secrets.s | upper | b64encode",
    "('user:' ~ secrets.s) | b64encode",
    "('us:' ~ secrets.s) | b64encode",
    "secrets.s | upper",
    "secrets.s | lower",
    "secrets.s | e",
    "secrets.s | e | upper",
    "secrets.s | trim",
    "'<' ~ secrets.s ~ '>'",
    "{'k': secrets.s} | tojson",
]

REFUSED_AT_VALIDATE = [
    ("secrets.s[1:]", "no attributes, items or slices"),
    ("secrets.s[:-1]", "no attributes, items or slices"),
    ("secrets.s | title", "`| title` cannot take a secret"),
    ("secrets.s | capitalize", "`| capitalize` cannot take a secret"),
    ("secrets.s | reverse", "`| reverse` cannot take a secret"),
    ("secrets.s | replace(' ', '_')", "`| replace` cannot take a secret"),
    ("secrets.s | list", "`| list` cannot take a secret"),
    ("secrets.s | list | join(' ')", "`| list` cannot take a secret"),
    ("secrets.s | wordwrap(5)", "`| wordwrap` cannot take a secret"),
    ("secrets.s.split('@')", "no attributes, items or slices"),
    ("secrets.s | forceescape", "`| forceescape` cannot take a secret"),
    ("secrets.s | urlize", "`| urlize` cannot take a secret"),
    ("'%r' | format(secrets.s)", "`| format` cannot take a secret"),
    ("secrets.s | pprint", "`| pprint` cannot take a secret"),
    ("secrets.s.encode().hex()", "no attributes, items or slices"),
    ("'x'.encode(secrets.s)", "cannot be passed to a method or function"),
    ("'%s' % secrets.s", "arithmetic operator or `%`"),
    ("(secrets.s ~ 'x') | reverse", "`| reverse` cannot take a secret"),
]

REFUSED_AT_RUN = [  # (where: a command or a plain text value, the template, what is said)
    ("env", "x{{ [secrets.s] }}", "a secret inside a list or mapping would be written"),
    ("env", "x{{ {'k': secrets.s} }}", "a secret inside a list or mapping"),
    ("command", "{{ {'k': secrets.s} | xmlattr }}", "`| xmlattr` cannot take a secret"),
    ("command", "{% set t = [secrets.s] %}{{ t | join(',') }}", "`| join` cannot take a secret"),
    ("command", "{% set t = [secrets.s] %}{{ 'x'.encode(t[0]) }}", "cannot be passed to a"),
]


def _leaks(data: bytes) -> list[str]:
    """Any recognisable piece of the canary, in the forms the audit found leaking."""
    text = data.decode("utf-8", errors="replace")
    middle = "et p@ss-ün"
    pieces = {
        middle,
        middle[::-1],
        middle.upper(),
        middle.title(),
        quote(middle, safe=""),
        quote(middle, safe="").lower(),
        quote(middle.upper(), safe=""),
        middle.encode().hex(),
        "et p&#64;ss",
        "p@ss",
        "P@SS",
        "p%40ss",
        "P%40SS",
    }
    return sorted(p for p in pieces if p in text)


def test_every_allowed_form_of_a_secret_is_masked_everywhere(
    runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY", CANARY)
    printing = "printf '%s\\n' " + " ".join(f"{{{{ {f} }}}}" for f in ALLOWED)
    Path("r.yaml").write_text(
        runbook_yaml(
            secrets={"s": {"env": "CANARY"}}, phases=[{"id": "p", "steps": [sh("forms", printing)]}]
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    out = status_json(runbook, "r.yaml")["steps"][0]["outputs"]["stdout"]
    assert out.splitlines() == ["***"] * len(ALLOWED), out
    seen = [r.out.encode(), r.err.encode(), _everything()]
    for args in (
        ("status", "r.yaml"),
        ("report", "r.yaml"),
        ("report", "r.yaml", "--format", "json"),
    ):
        res = runbook(*args)
        seen += [res.out.encode(), res.err.encode()]
    assert [leak for data in seen for leak in _leaks(data)] == []


@pytest.mark.parametrize(("expr", "says"), REFUSED_AT_VALIDATE)
def test_a_transformation_the_masker_cannot_know_is_exit_2_at_validate(
    runbook: Any, expr: str, says: str
) -> None:
    text = runbook_yaml(
        secrets={"s": {"env": "CANARY"}},
        phases=[{"id": "p", "steps": [sh("leak", f"printf '%s\\n' {{{{ {expr} }}}}")]}],
    )
    Path("r.yaml").write_text(text)
    r = runbook("validate", "r.yaml")
    assert r.code == 2, r.output
    (line,) = [i for i, ln in enumerate(text.splitlines(), 1) if "{{" in ln]
    col = text.splitlines()[line - 1].index("{{") + 1
    assert f"r.yaml:{line}:{col}: phases[0].steps[0].with.command: " in r.err and says in r.err


@pytest.mark.parametrize(("where", "template", "says"), REFUSED_AT_RUN)
def test_a_transformation_only_a_run_shows_fails_the_step_and_leaks_nothing(
    runbook: Any, monkeypatch: pytest.MonkeyPatch, where: str, template: str, says: str
) -> None:
    monkeypatch.setenv("CANARY", CANARY)
    step = sh("leak", "printf '%s\\n' " + template if where == "command" else "echo $X")
    if where == "env":
        step["with"]["env"] = {"X": template}
    Path("r.yaml").write_text(
        runbook_yaml(secrets={"s": {"env": "CANARY"}}, phases=[{"id": "p", "steps": [step]}])
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    (got,) = status_json(runbook, "r.yaml")["steps"]
    assert got["status"] == "failed" and says in got["error"], got["error"]
    assert [
        leak for d in (r.out.encode(), r.err.encode(), _everything()) for leak in _leaks(d)
    ] == []


def test_a_header_holding_a_derived_form_is_not_forwarded_to_another_host(
    runbook: Any,
    monkeypatch: pytest.MonkeyPatch,
    two_hosts: tuple[Recorder, Recorder, Recorder],  # noqa: F811
) -> None:
    elsewhere, here, _same = two_hosts
    monkeypatch.setenv("CANARY", CANARY)
    Path("r.yaml").write_text(
        runbook_yaml(
            secrets={"s": {"env": "CANARY"}},
            phases=[
                {
                    "id": "p",
                    "steps": [
                        {
                            "id": "call",
                            "action": "http",
                            "with": {
                                "url": f"{here.url}/go",
                                "headers": {
                                    "X-Key": "k{{ secrets.s | upper | b64encode }}",
                                    "X-Low": "{{ secrets.s | urlencode | lower }}",
                                    "X-Wave": "pilot",
                                },
                            },
                            "rollback": "none",
                        }
                    ],
                }
            ],
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    (landing,) = [
        {k.lower(): v for k, v in h.items()} for p, h in elsewhere.seen if p == "/landing"
    ]
    assert "x-key" not in landing and "x-low" not in landing and landing["x-wave"] == "pilot"
    first = {k.lower(): v for k, v in here.seen[0][1].items()}
    assert first["x-low"] == quote(CANARY, safe="/").lower()  # the first host got them


# -- item 8: the crash handler masks the run's secrets ------------------------------------------


def test_x_encode_secret_is_refused_and_leaks_nowhere(
    runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`{{ 'x'.encode(secrets.s) }}` printed `LookupError: unknown encoding: <secret>` on
    stderr and into the crash log: now exit 2 at validate, and a step failure when only the
    run shows the secret reaching the method."""
    monkeypatch.setenv("CANARY", "not-an-encoding-4711")
    for command, code in (
        ("echo {{ 'x'.encode(secrets.s) }}", 2),
        ("echo {% set e = [secrets.s] %}{{ 'x'.encode(e[0]) }}", 1),
    ):
        Path("r.yaml").write_text(
            runbook_yaml(
                secrets={"s": {"env": "CANARY"}},
                phases=[{"id": "p", "steps": [sh("s", command)]}],
            )
        )
        r = runbook("apply", "r.yaml", "--yes")
        assert r.code == code and "internal error" not in r.output, r.output
        assert "cannot be passed to a" in r.output + json.dumps(
            status_json(runbook, "r.yaml") if code == 1 else {}
        )
        assert "4711" not in r.output
    assert list(Path(".runbook").rglob("crash-*.log")) == [] and b"4711" not in _everything()


def test_the_crash_handler_masks_every_secret_of_the_process(
    runbook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash handler masked only URL passwords: a bug whose message holds a secret (any
    exception the engine did not foresee) put the secret on stderr and into the log."""
    from runbook_engine.commands import validate
    from runbook_engine.masking import Masker

    masker = Masker({"s": "canary-crash-5150"})  # a run's masker, as prepare() makes it

    def boom(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("unforeseen: token canary-crash-5150 and password=Hunter9pw")

    monkeypatch.setattr(validate.command, "callback", boom)
    Path(".runbook").mkdir()
    r = runbook("validate", "x.yaml")
    assert r.code == 1 and "runbook: internal error: RuntimeError: unforeseen: token ***" in r.err
    assert "5150" not in r.err and "Hunter9pw" not in r.err and "password=***" in r.err
    (log,) = Path(".runbook/.logs").glob("crash-*.log")
    text = log.read_text()
    assert "RuntimeError: unforeseen: token *** and password=***" in text
    assert "5150" not in text and "Hunter9pw" not in text
    assert masker  # kept alive: the process's maskers are the crash handler's


# -- item 10: plan says what apply runs, and masks passwords ------------------------------------


def test_plan_shows_the_quoted_command_apply_runs(runbook: Any) -> None:
    Path("p.yaml").write_text(
        runbook_yaml(
            vars={"files": "a b; rm -rf /", "list": ["x", "y z"]},
            phases=[
                {
                    "id": "p",
                    "steps": [sh("a", "printf '[%s]' {{ vars.files }} {{ vars.list }} > o.txt")],
                }
            ],
        )
    )
    shown = "printf '[%s]' 'a b; rm -rf /' x 'y z' > o.txt"
    for fmt in ("text", "markdown", "json"):
        r = runbook("plan", "p.yaml", "--format", fmt)
        assert r.code == 0 and (shown in r.out or json.dumps(shown)[1:-1] in r.out), r.out
    assert runbook("apply", "p.yaml", "--yes").code == 0
    assert Path("o.txt").read_text() == "[a b; rm -rf /][x][y z]"


def test_plan_show_diff_and_state_mask_url_and_keyword_dsn_passwords(runbook: Any) -> None:
    doc = runbook_yaml(
        vars={
            "db": "postgresql://admin:Hunter2pw@db.example/crm",
            "db3": "host=db.example user=admin password=Hunter4pw dbname=crm",
            "db4": "host=db.example password='Hunter 6pw' dbname=crm",
            "api": "https://svc:Hunter5pw@api.example/v1",
        },
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("a", "echo {{ vars.db }} {{ vars.db3 }} {{ vars.db4 }} {{ vars.api }}")
                ],
            }
        ],
    )
    Path("a.yaml").write_text(doc)
    Path("b.yaml").write_text(doc.replace("Hunter", "Gunter"))
    seen = []
    for args in (
        ("plan", "a.yaml"),
        ("plan", "a.yaml", "--format", "markdown"),
        ("plan", "a.yaml", "--format", "json"),
        ("show", "a.yaml"),
        ("diff", "a.yaml", "b.yaml"),
        ("apply", "a.yaml", "--yes"),
        ("status", "a.yaml", "--format", "json"),
        ("report", "a.yaml"),
    ):
        r = runbook(*args)
        assert r.code in (0, 1), (args, r.output)
        seen.append(r.output)
    seen.append(_everything().decode(errors="replace"))
    text = "\n".join(seen)
    for pw in ("Hunter2pw", "Hunter4pw", "Hunter 6pw", "Hunter5pw", "Gunter4pw"):
        assert pw not in text, pw
    assert "password=***" in text and "admin:***@db.example" in text
    con = sqlite3.connect(".runbook/t/state.db")
    try:
        (vars_,) = [
            json.loads(r)["vars"]
            for (r,) in con.execute("SELECT rec FROM journal")
            if json.loads(r)["t"] == "run" and "vars" in json.loads(r)
        ][:1]
    finally:
        con.close()
    assert vars_["db3"] == "host=db.example user=admin password=*** dbname=crm"
