"""A runbook that exercises every part of a plan and a graph: a sequential phase, a parallel
phase with `needs`, a wave phase, risks in two cells of the matrix, contingencies, and the
three kinds of rollback (an action, `none`, and none said)."""

from __future__ import annotations

RUNBOOK = """\
apiVersion: runbook/v1
kind: Runbook
metadata:
  name: plan-test
  description: Move customers | carefully
  owner: ops
vars:
  legacy_db: sqlite:///legacy.db
  new_db: sqlite:///new.db
risks:
  - id: data-loss
    description: rows lost during copy
    likelihood: low
    impact: critical
    mitigation: backup first
    owner: dba
    contingencies: [restore, page]
  - id: slow-copy
    likelihood: high
    impact: medium
    mitigation: copy in batches
    owner: ops
    contingencies: [page]
  - id: bad-health
    likelihood: high
    impact: medium
    contingencies: [page]
contingencies:
  - id: restore
    action: shell
    with: {command: "cp legacy.bak legacy.db"}
  - id: page
    action: notify
    with: {channel: outbox, to: [oncall@example.org], message: "{{ failed_step.id }} failed"}
phases:
  - id: prepare
    steps:
      - id: backup
        action: shell
        with: {command: "cp legacy.db legacy.bak"}
        risks: [data-loss]
        rollback: none
      - id: schema
        action: sql.exec
        with: {dsn: "{{ vars.new_db }}", sql: "CREATE TABLE customers (id INTEGER PRIMARY KEY)"}
        rollback: {action: sql.exec, with: {dsn: "{{ vars.new_db }}", sql: "DROP TABLE customers"}}
  - id: comms
    parallel: true
    steps:
      - id: announce
        action: notify
        with: {channel: outbox, to: [a@example.org, b@example.org], message: hello}
        rollback: none
      - id: wait-a-bit
        action: wait
        with: {duration: 1s}
      - id: go-ahead
        action: approval
        with: {message: start the copy?}
        needs: [announce]
  - id: rollout
    waves:
      - {id: pilot, vars: {percent: 1}}
      - {id: all, vars: {percent: 100}}
    steps:
      - id: copy
        action: sql.copy
        with:
          source: "{{ vars.legacy_db }}"
          target: "{{ vars.new_db }}"
          table: customers
          key: id
          where: "id % 100 < {{ wave.vars.percent }}"
        risks: [data-loss, slow-copy]
        rollback:
          action: sql.exec
          with: {dsn: "{{ vars.new_db }}", sql: "DELETE FROM customers WHERE id % 100 < {{ wave.vars.percent }}"}
      - id: health
        action: check
        with: {dsn: "{{ vars.new_db }}", query: "SELECT 0", condition: "value < 0.02"}
        risks: [bad-health]
        on_failure: rollback-wave
      - id: tidy
        action: shell
        with: {command: "echo done"}
        when: "{{ wave.id == 'all' }}"
        rollback: none
"""

GROUPS = [
    ["backup"],
    ["schema"],
    ["announce", "wait-a-bit"],
    ["go-ahead"],
    ["copy[pilot]"],
    ["health[pilot]"],
    ["tidy[pilot]"],
    ["copy[all]"],
    ["health[all]"],
    ["tidy[all]"],
]
