"""The built-in actions of SPEC §3, by name: ``module:class``, imported on first use."""

BUILTINS: dict[str, str] = {
    "shell": "runbook_engine.plugins.shell:ShellAction",
    "ssh": "runbook_engine.plugins.ssh:SshAction",
    "sql.exec": "runbook_engine.plugins.sql:SqlExecAction",
    "sql.query": "runbook_engine.plugins.sql:SqlQueryAction",
    "sql.copy": "runbook_engine.plugins.sql:SqlCopyAction",
    "sql.verify": "runbook_engine.plugins.sql:SqlVerifyAction",
    "http": "runbook_engine.plugins.http:HttpAction",
    "notify": "runbook_engine.plugins.notify:NotifyAction",
    "approval": "runbook_engine.plugins.approval:ApprovalAction",
    "check": "runbook_engine.plugins.check:CheckAction",
    "wait": "runbook_engine.plugins.wait:WaitAction",
}
