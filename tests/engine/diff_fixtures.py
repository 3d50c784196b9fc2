"""Runbooks shared by the show, diff and git tests: one base and ways to edit it."""

from __future__ import annotations

from pathlib import Path

BASE = """\
# a small migration with every kind of thing diff compares
apiVersion: runbook/v1
kind: Runbook
metadata:
  name: shop-migration
  description: move the shop's customers
  owner: ops
vars:
  new_db: sqlite:///new.db
  batch: {type: integer, default: 500, description: rows per batch}
secrets:
  api_token: {env: DIFF_TEST_TOKEN}
hosts:
  app1: {address: 127.0.0.1, port: 2222, user: deploy, groups: [app]}
defaults:
  timeout: 10m
  retries: {attempts: 3, delay: 1s}
  on_failure: abort
risks:
  - id: data-loss
    description: rows lost during the copy
    likelihood: medium
    impact: critical
    mitigation: back up first
    contingencies: [restore, page]
  - id: slow-copy
    likelihood: high
    impact: low
    contingencies: [page]
contingencies:
  - id: restore
    action: shell
    with: {command: "echo restore"}
  - id: page
    action: notify
    with: {channel: outbox, to: [ops@example.com], templates: {en: {subject: paged, body: "{{ failed_step.id }} failed"}}}
phases:
  - id: prepare
    steps:
      - id: backup
        action: shell
        with: {command: "echo backup"}
        risks: [data-loss]
        rollback: none
      - id: sign-off
        action: approval
        with: {message: "go?", approvers: [alice, bob]}
  - id: rollout
    waves:
      - {id: pilot, vars: {percent: 1}}
      - {id: early, vars: {percent: 10}}
      - {id: all, vars: {percent: 100}}
    steps:
      - id: copy
        action: shell
        with: {command: "echo copy {{ wave.vars.percent }}"}
        risks: [data-loss, slow-copy]
        on_failure: rollback
        rollback: {action: shell, with: {command: "echo undo {{ wave.vars.percent }}"}}
      - id: health
        action: check
        with: {command: "echo 0.01", condition: "value < 0.02", interval: 1s, count: 3, failure_limit: 1}
        on_failure: rollback-wave
  - id: finish
    steps:
      - id: verify
        action: shell
        with: {command: "echo verify"}
        rollback: none
      - id: announce
        action: shell
        with: {command: "echo done"}
        rollback: none
"""

# The same runbook, reformatted: comments, key order, flow/block style, quoting, the order of
# risks and contingencies, durations and retries written differently.
REFORMATTED = """\
kind: Runbook
apiVersion: "runbook/v1"
metadata: {owner: ops, name: shop-migration, description: "move the shop's customers"}
# vars first
vars:
  batch:
    description: rows per batch
    default: 500
    type: integer
  new_db: 'sqlite:///new.db'
secrets: {api_token: {env: DIFF_TEST_TOKEN}}
hosts:
  app1:
    groups: [app]
    user: deploy
    port: 2222
    address: 127.0.0.1
defaults: {on_failure: abort, retries: {delay: 1000ms, attempts: 3}, timeout: 600s}
contingencies:
  - id: page
    action: notify
    with:
      templates:
        en: {body: "{{ failed_step.id }} failed", subject: paged}
      to: [ops@example.com]
      channel: outbox
  - {id: restore, action: shell, with: {command: echo restore}}
risks:
  - {id: slow-copy, impact: low, likelihood: high, contingencies: [page]}
  - contingencies: [restore, page]   # order matters here: restore first
    mitigation: back up first
    impact: critical
    likelihood: medium
    description: rows lost during the copy
    id: data-loss
phases:
  - id: prepare
    parallel: false
    steps:
      - {id: backup, action: shell, with: {command: echo backup}, rollback: none, risks: [data-loss]}
      - action: approval
        id: sign-off
        with: {approvers: [alice, bob], message: go?}
  - id: rollout
    needs: [prepare]
    waves:
      - id: pilot
        vars: {percent: 1}
      - {vars: {percent: 10}, id: early}
      - {id: all, vars: {percent: 100}}
    steps:
      - rollback:
          with: {command: "echo undo {{ wave.vars.percent }}"}
          action: shell
        on_failure: rollback
        risks: [data-loss, slow-copy]
        with: {command: "echo copy {{ wave.vars.percent }}"}
        action: shell
        id: copy
      - id: health
        action: check
        on_failure: rollback-wave
        with:
          failure_limit: 1
          count: 3
          interval: 1s
          condition: "value < 0.02"
          command: echo 0.01
  - id: finish
    steps:
      - {id: verify, action: shell, with: {command: echo verify}, rollback: none}
      - {id: announce, action: shell, with: {command: echo done}, rollback: none}
"""


def edit(text: str, *pairs: tuple[str, str]) -> str:
    """``text`` with each (old, new) replaced exactly once (a test fails loudly otherwise)."""
    for old, new in pairs:
        assert text.count(old) == 1, f"expected {old!r} once in the runbook"
        text = text.replace(old, new)
    return text


def write(path: str | Path, text: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return str(path)
