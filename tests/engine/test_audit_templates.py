"""The holes the audit of issue 10 found in templates, each closed and named here:
customer data in a here-document or a comment ran as shell (item 1), outside data chose a
URL's host (item 6), template errors crashed runs and hung plans (item 7), and the `raw`
lint missed `set` and `for` (item 13).  Every command here runs through a real /bin/sh."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import RUNBOOK, runbook_yaml, sh, status_json
from tests.servers.http import HttpServer

SRC_HEREDOC = "printf '%s' \"x\\$(touch PWNED_HEREDOC)\""
SRC_COMMENT = "printf 'acme\\ntouch PWNED_COMMENT #'"


def _at(text: str, needle: str) -> str:
    """``LINE:COL`` of the first ``{{`` on the line holding ``needle``."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return f"{i}:{line.index('{{') + 1}"
    raise AssertionError(needle)


def _write(doc: str) -> str:
    Path("r.yaml").write_text(doc)
    return doc


HEREDOC = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: inj}
phases:
  - id: p
    steps:
      - id: src
        action: shell
        with: {command: "printf '%s' \\"x\\\\$(touch PWNED_HEREDOC)\\""}
        rollback: none
      - id: heredoc
        action: shell
        with:
          command: |
            cat > out.txt <<EOF
            name: {{ steps.src.outputs.stdout }}
            EOF
        rollback: none
"""

COMMENT = """\
apiVersion: runbook/v1
kind: Runbook
metadata: {name: cmt}
phases:
  - id: p
    steps:
      - id: src
        action: shell
        with: {command: "printf 'acme\\\\ntouch PWNED_COMMENT #'"}
        rollback: none
      - id: use
        action: shell
        with:
          command: |
            echo moving  # customer {{ steps.src.outputs.stdout }}
            echo done
        rollback: none
"""


def test_customer_data_in_a_heredoc_body_is_exit_2_at_its_position_and_never_runs(
    runbook: Any,
) -> None:
    doc = _write(HEREDOC)
    r = runbook("validate", "r.yaml")
    assert r.code == 2
    assert f"r.yaml:{_at(doc, 'name: {{')}: phases[0].steps[1].with.command: `{{{{ }}}}` " in r.err
    assert "inside a here-document (<<EOF … EOF)" in r.err and "printf" in r.err
    assert runbook("apply", "r.yaml", "--yes").code == 2
    assert not Path("PWNED_HEREDOC").exists() and not Path(".runbook").exists()
    # a quoted delimiter does not help: a value with a line `EOF` would end it early
    _write(doc.replace("<<EOF", "<<'EOF'"))
    assert runbook("validate", "r.yaml").code == 2


def test_customer_data_in_a_shell_comment_is_exit_2_at_its_position_and_never_runs(
    runbook: Any,
) -> None:
    doc = _write(COMMENT)
    r = runbook("validate", "r.yaml")
    assert r.code == 2
    assert f"r.yaml:{_at(doc, 'echo moving')}: phases[0].steps[1].with.command: " in r.err
    assert "inside a shell comment: a line break in the value would end the comment" in r.err
    assert runbook("apply", "r.yaml", "--yes").code == 2
    assert not Path("PWNED_COMMENT").exists()


@pytest.mark.parametrize(
    ("command", "where"),
    [
        # the here-document's operator comes from a raw variable: only the rendered command
        # shows where the value lands
        ("cat > out.txt {{ vars.op | raw }}\nname: {{ steps.src.outputs.stdout }}\nEOF", "<<"),
        ("echo moving {{ vars.hash | raw }} customer {{ steps.src.outputs.stdout }}", "#"),
    ],
)
def test_a_value_placed_by_what_only_rendering_shows_fails_the_step_and_never_runs(
    runbook: Any, command: str, where: str
) -> None:
    src = SRC_HEREDOC if where == "<<" else SRC_COMMENT
    _write(
        runbook_yaml(
            vars={"op": "<<EOF", "hash": "#"},
            phases=[{"id": "p", "steps": [sh("src", src), sh("use", command)]}],
        )
    )
    assert runbook("validate", "--strict", "r.yaml").code == 0  # raw on the runbook's vars
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    use = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "use")
    assert use["status"] == "failed" and use["attempts"] == 1
    what = "inside a here-document" if where == "<<" else "inside a shell comment"
    assert use["error"].startswith(f"template error in with.command: a value lands {what}")
    assert not Path("PWNED_HEREDOC").exists() and not Path("PWNED_COMMENT").exists()
    assert not Path("out.txt").exists()


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("echo `echo {{ steps.src.outputs.stdout }}`", "inside backquotes"),
        ("eval echo {{ steps.src.outputs.stdout }}", "after `eval`"),
        ("sh -c {{ steps.src.outputs.stdout }}", "in the script of `sh -c`"),
        ('echo "$(echo {{ steps.src.outputs.stdout }})"', 'inside a "…" literal'),
        ("echo ${X:-{{ steps.src.outputs.stdout }}}", "inside `${…}`"),
    ],
)
def test_other_places_where_quotes_do_not_protect_a_value_are_exit_2(
    runbook: Any, command: str, says: str
) -> None:
    _write(runbook_yaml(phases=[{"id": "p", "steps": [sh("src", "echo a"), sh("use", command)]}]))
    r = runbook("validate", "r.yaml")
    assert r.code == 2 and says in r.err, r.err


def test_values_in_words_still_run_as_one_word_each(runbook: Any) -> None:
    """What stays allowed: a word anywhere a command reads words, `$( … )` included, and
    after a here-document has ended; `sh -c '…' sh VALUE` passes the value as `$1`."""
    _write(
        runbook_yaml(
            phases=[
                {
                    "id": "p",
                    "steps": [
                        sh("src", SRC_COMMENT),
                        sh(
                            "use",
                            "cat > a.txt <<'EOF'\nfixed $(text)\nEOF\n"
                            "printf '%s|' {{ steps.src.outputs.stdout }} $(printf %s "
                            "{{ steps.src.outputs.stdout }}) >> a.txt\n"
                            'sh -c \'printf "[%s]" "$1"\' sh {{ steps.src.outputs.stdout }} >> a.txt',
                        ),
                    ],
                }
            ]
        )
    )
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 0, r.output
    value = "acme\ntouch PWNED_COMMENT #"
    assert (
        Path("a.txt").read_text() == f"fixed $(text)\n{value}|acme|touch|PWNED_COMMENT|#|[{value}]"
    )
    assert not Path("PWNED_COMMENT").exists()


# -- item 6: a URL's host ---------------------------------------------------------------------


def test_outside_data_in_a_url_host_is_exit_2_and_a_host_value_is_checked_at_run_time(
    runbook: Any, http_server: HttpServer
) -> None:
    """The audit: `http://{{ steps.tenant.outputs.stdout }}.api.invalid/…` with the output
    `127.0.0.1:PORT/steal?` sent the request, with `Authorization`, to another host."""
    steal = http_server.url.removeprefix("http://") + "/steal?"
    doc = runbook_yaml(
        vars={"tenant": steal},
        phases=[
            {
                "id": "p",
                "steps": [
                    sh("tenant", f"printf '%s' '{steal}'"),
                    {
                        "id": "call",
                        "action": "http",
                        "with": {
                            "url": "http://{{ steps.tenant.outputs.stdout }}.api.invalid/v1",
                            "headers": {"Authorization": "Bearer t0ps3cret-token"},
                        },
                        "rollback": "none",
                    },
                ],
            }
        ],
    )
    _write(doc)
    r = runbook("validate", "r.yaml")
    assert r.code == 2
    assert f"r.yaml:{_at(doc, 'url:')}: phases[0].steps[1].with.url: `steps.tenant.outputs" in (
        r.err
    )
    assert "outside data in the scheme, host or port of a URL" in r.err
    # the runbook's own variable in the host: checked when rendered, refused as not a host
    _write(doc.replace("steps.tenant.outputs.stdout", "vars.tenant"))
    assert runbook("validate", "--strict", "r.yaml").code == 0
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    call = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "call")
    assert "a value in the host of a URL must be a host name" in call["error"]
    assert http_server.requests == []  # nothing was sent anywhere
    # a host name is fine, and a value in the userinfo is percent-encoded
    from runbook_engine.format.templates import render_string

    url = "http://{{ vars.u }}:{{ vars.p }}@{{ vars.h }}:8080/{{ vars.k }}"
    ctx = {"vars": {"u": "ops", "p": "p@ss/w:rd", "h": "api.example", "k": "a/b"}}
    assert render_string(url, ctx, "url") == "http://ops:p%40ss%2Fw%3Ard@api.example:8080/a%2Fb"


# -- item 7: template errors and runaway templates ---------------------------------------------


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("'{}'.format()", "IndexError"),
        ("10.0 ** 1000", "OverflowError"),
        ("'x' * 2**62", "a value of more than 1,000,000 characters"),
        ("2 ** 10000000", "an integer of more than 100,000 bits"),
        ("'x' | center(10**9)", "`center` to more than 1,000,000 characters"),
        ("'%999999999d' % 1", "a format width"),
    ],
)
def test_a_template_error_fails_the_step_never_an_internal_error(
    runbook: Any, expr: str, says: str
) -> None:
    _write(
        runbook_yaml(
            phases=[{"id": "p", "steps": [sh("s", f"echo {{{{ {expr} }}}}"), sh("t", "true")]}]
        )
    )
    assert runbook("validate", "r.yaml").code == 0
    r = runbook("apply", "r.yaml", "--yes")
    assert r.code == 1, r.output
    assert "internal error" not in r.output
    s = next(s for s in status_json(runbook, "r.yaml")["steps"] if s["id"] == "s")
    assert s["status"] == "failed" and "template error in with.command" in s["error"]
    assert says in s["error"]
    assert runbook("plan", "r.yaml").code == 0


def test_a_runaway_template_stops_within_seconds_in_plan_and_apply() -> None:
    """The audit's nested `range(100000)` loops hung `plan` and made `apply` ignore the step
    timeout, SIGTERM and a second SIGINT (54 s, or 8 minutes)."""
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    _write(
        runbook_yaml(phases=[{"id": "p", "steps": [sh("s", "echo " + loops + "x", timeout="2s")]}])
    )
    t0 = time.monotonic()
    plan = subprocess.run([RUNBOOK, "plan", "r.yaml"], capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0 and time.monotonic() - t0 < 20, plan.stderr
    t0 = time.monotonic()
    apply = subprocess.run(
        [RUNBOOK, "apply", "r.yaml", "--yes"], capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - t0
    assert apply.returncode == 1 and took < 20, (took, apply.stdout, apply.stderr)
    assert "the template took more than" in apply.stdout + apply.stderr
    # and SIGTERM during the render is acted on once the render gives up, in seconds
    proc = subprocess.Popen(
        [RUNBOOK, "apply", "r.yaml", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.stdout is not None
    assert " run " in proc.stdout.readline()  # the run began: the render is under way
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 15, (out, err)
    assert proc.returncode in (1, 130), (proc.returncode, out, err)


# -- item 13: the raw lint follows set and for -------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "{% set v = steps.q.outputs.stdout %}echo {{ v | raw }}",
        "{% for line in steps.q.outputs.stdout.split(',') %}echo {{ line | raw }}; {% endfor %}",
        "{% set a = steps.q.outputs.stdout %}{% set b = a %}echo {{ b | raw }}",
    ],
)
def test_raw_lint_follows_a_set_name_and_a_loop_variable_to_outside_data(
    runbook: Any, command: str
) -> None:
    _write(
        runbook_yaml(
            phases=[{"id": "p", "steps": [sh("q", "printf 'ok; touch X'"), sh("a", command)]}]
        )
    )
    r = runbook("validate", "r.yaml")
    assert r.code == 0 and "warning: `steps.q.outputs.stdout" in r.err, r.err
    assert "| raw` writes outside data into a command as it is" in r.err
    assert runbook("validate", "--strict", "r.yaml").code == 2
