"""The built-in actions of SPEC §3, by name: ``module:class``, imported on first use."""

BUILTINS: dict[str, str] = {
    "shell": "runbook_engine.plugins.shell:ShellAction",
    "ssh": "runbook_engine.plugins.ssh.action:SshAction",
    "sql.exec": "runbook_engine.plugins.sql.actions:SqlExecAction",
    "sql.query": "runbook_engine.plugins.sql.actions:SqlQueryAction",
    "sql.copy": "runbook_engine.plugins.sql.actions:SqlCopyAction",
    "sql.verify": "runbook_engine.plugins.sql.actions:SqlVerifyAction",
    "http": "runbook_engine.plugins.http:HttpAction",
    "notify": "runbook_engine.plugins.notify.action:NotifyAction",
    "approval": "runbook_engine.plugins.approval:ApprovalAction",
    "check": "runbook_engine.plugins.check:CheckAction",
    "wait": "runbook_engine.plugins.wait:WaitAction",
}
