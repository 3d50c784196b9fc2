"""Who ``notify`` writes to and what each one gets: recipients, locales, rendered messages.

Recipients come from ``to`` (addresses or ``{address, name, locale, vars}``) or from the rows
of ``recipients_query`` on ``dsn`` (columns ``address``, ``name``, ``locale``; every other
column is a template variable ``recipient.COLUMN``, like the ``vars`` of a ``to`` entry).  Each recipient's message is rendered from the template of its locale
(``pt-BR`` -> ``pt`` -> ``default_locale``) with the run's context plus ``recipient``.  Every
message is rendered before the first is sent, so that a template error never half-sends a step.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from runbook_engine.errors import ActionFailed
from runbook_engine.format.templates import Repeated, TemplateError

MAX_RECIPIENTS = 1_000_000  # rows read from a recipients_query
SHOWN = 10  # names listed in a message
WEBHOOK_KEY = "webhook"  # the one record of a webhook with no recipients
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+$")


class Recipient:
    """One recipient of a step (a plain class with slots: thousands are made per second)."""

    __slots__ = ("address", "attempt", "entity", "key", "locale", "name", "vars")

    def __init__(
        self,
        address: str,
        name: str = "",
        locale: str | None = None,
        vars: Mapping[str, Any] | None = None,
        entity: Any = None,  # the cohort member's key (``to: {cohort}``)
        attempt: int | None = None,  # the wave attempt: a member is told once per attempt
    ) -> None:
        self.address, self.name, self.locale = address, name, locale
        self.vars: Mapping[str, Any] = vars if vars is not None else {}
        self.entity, self.attempt = entity, attempt
        # the record key: one per recipient and step (for a cohort member: per member, step
        # and wave attempt), whatever the channel; the outbox's `recipient`
        if attempt is not None:
            self.key = f"member:{attempt}:{entity!r}"
        else:
            self.key = f"to:{address.strip().lower()}" if address else WEBHOOK_KEY

    def __repr__(self) -> str:
        return f"Recipient({self.address!r}, key={self.key!r})"

    def as_context(self) -> dict[str, Any]:
        return {**self.vars, "address": self.address, "name": self.name, "locale": self.locale}


class Message(NamedTuple):
    """One rendered message (a tuple: thousands are made per second)."""

    recipient: Recipient
    locale: str | None  # the template's locale (None: `subject`/`message` were used)
    subject: str
    body: str
    message_id: str  # "<hex@runbook-name.runbook>"

    @property
    def key(self) -> str:
        return self.recipient.key

    @property
    def token(self) -> str:
        """The Message-ID's unique part: outbox file name, webhook Idempotency-Key."""
        return token(self.message_id)


def message_id(runbook: str, run: str, step: str, attempt: str, key: str) -> str:
    """Stable for the message's outbox key (run, step, wave attempt or firing, recipient): a
    receiver can de-duplicate on it, and no two messages share one."""
    text = f"{runbook}\0{run}\0{step}\0{attempt}\0{key}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:40]
    return f"<{digest}@{runbook}.runbook>"


def token(mid: str) -> str:
    return mid[1:].split("@", 1)[0]


def shown(names: Iterable[str], total: int | None = None) -> str:
    items = list(names)
    total = len(items) if total is None else total
    text = ", ".join(items[:SHOWN])
    return text + (f" and {total - SHOWN} more" if total > SHOWN else "")


def from_members(
    members: Any, address_attr: str
) -> tuple[list[Recipient], list[Any], list[tuple[Any, str]]]:
    """A wave's members as recipients; (recipients, unreachable keys, (key, why) refused)."""
    out: list[Recipient] = []
    unreachable: list[Any] = []
    refused: list[tuple[Any, str]] = []
    for key, attrs, _state in members.rows():
        address = attrs.get(address_attr)
        if address is None or not str(address).strip():
            unreachable.append(key)
            continue
        address = str(address).strip()
        if (
            "\r" in address
            or "\n" in address
            or not (address.isascii() and _ADDRESS.match(address))
        ):
            refused.append((key, f"invalid address in `{address_attr}`"))
            continue
        locale = attrs.get("locale")
        out.append(
            Recipient(
                address,
                _one_line(attrs.get("name")),
                str(locale) if locale else None,
                {**attrs, "key": key},
                entity=key,
                attempt=members.attempt,
            )
        )
    return out, unreachable, refused


def from_params(
    params: Mapping[str, Any], channel: str
) -> tuple[list[Recipient], list[tuple[Recipient, str]]]:
    """The step's recipients, de-duplicated (first wins), and those refused, each with why: an
    address that is not one (a line break in it would smuggle a header) fails that recipient
    alone, and the others are sent (SPEC §11)."""
    if params.get("recipients_query") and params.get("to"):
        raise ActionFailed("notify: give `to` or `recipients_query`, not both", retryable=False)
    if params.get("recipients_query"):
        if not params.get("dsn"):
            raise ActionFailed("notify: `recipients_query` needs a `dsn`", retryable=False)
        found = _from_query(str(params["dsn"]), str(params["recipients_query"]))
    elif params.get("to"):
        found = [_from_item(item, i) for i, item in enumerate(params["to"])]
    elif channel == "webhook":
        return [Recipient("")], []  # one message to the webhook itself
    else:
        raise ActionFailed(
            f"notify: channel {channel} needs recipients: give `to` or `recipients_query`",
            retryable=False,
        )
    unique: dict[str, Recipient] = {}
    for r in found:
        unique.setdefault(r.key, r)
    if channel == "webhook":
        return list(unique.values()), []
    good: list[Recipient] = []
    refused: list[tuple[Recipient, str]] = []
    for r in unique.values():
        if "\r" in r.address or "\n" in r.address:
            refused.append((r, "a line break in the address"))
        elif not (r.address.isascii() and _ADDRESS.match(r.address)):
            refused.append((r, "not an e-mail address"))
        else:
            good.append(r)
    return good, refused


def printable(text: str, limit: int = 80) -> str:
    """An address or a name as a message can show it: control characters escaped (``\\r``,
    ``\\n``), never written raw into a line, and cut."""
    out = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _from_item(item: Any, index: int) -> Recipient:
    if isinstance(item, str):
        return Recipient(item.strip())
    if isinstance(item, Mapping):
        extra = item.get("vars") or {}
        return Recipient(
            str(item.get("address", "")).strip(),
            _one_line(item.get("name")),
            str(item["locale"]) if item.get("locale") else None,
            dict(extra) if isinstance(extra, Mapping) else {},
        )
    raise ActionFailed(f"notify: to[{index}]: expected an address or a mapping", retryable=False)


def _from_query(dsn: str, sql: str) -> list[Recipient]:
    from runbook_engine.plugins.sql.db import fetch, redact_dsn

    columns, rows = fetch(dsn, sql, MAX_RECIPIENTS + 1)
    lower = [c.lower() for c in columns]
    if "address" not in lower:
        raise ActionFailed(
            f"notify: recipients_query on {redact_dsn(dsn)} returned no `address` column "
            f"(columns: {', '.join(columns) or 'none'})",
            retryable=False,
        )
    if len(rows) > MAX_RECIPIENTS:
        raise ActionFailed(
            f"notify: recipients_query returned more than {MAX_RECIPIENTS} rows", retryable=False
        )
    out = []
    for row in rows:
        values = dict(zip(lower, row, strict=False))
        extra = {c: v for c, v in zip(columns, row, strict=False) if c.lower() not in _OWN}
        locale = values.get("locale")
        out.append(
            Recipient(
                "" if values["address"] is None else str(values["address"]).strip(),
                _one_line(values.get("name")),
                str(locale) if locale else None,
                extra,
            )
        )
    return out


_OWN = ("address", "name", "locale")


def _one_line(value: Any) -> str:
    """A name as given, trimmed; a line break inside is kept, for the e-mail channels to
    refuse (a header injection), never silently joined."""
    return "" if value is None else str(value).strip()


def _norm(locale: str) -> str:
    return locale.strip().lower().replace("_", "-")


def pick_locale(
    locale: str | None, available: Iterable[str], default: str
) -> tuple[str | None, list[str]]:
    """The template for ``locale``: exact, then its language, then the default (and its
    language).  Returns (chosen or None, the candidates tried)."""
    by_norm = {_norm(k): k for k in available}
    tried: list[str] = []
    for wanted in (locale, default):
        if not wanted:
            continue
        for cand in (_norm(wanted), _norm(wanted).split("-", 1)[0]):
            if cand not in tried:
                tried.append(cand)
            if cand in by_norm:
                return by_norm[cand], tried
    return None, tried


class Renderer:
    """Renders one message per recipient from ``templates`` or ``subject``/``message``; the
    templates of each locale are prepared once (``Repeated``), not per recipient.
    ``scope``: the outbox key of the step's messages (run, step, attempt or firing)."""

    def __init__(
        self,
        params: Mapping[str, Any],
        context: Mapping[str, Any],
        runbook: str,
        scope: tuple[str, str, str],
    ) -> None:
        templates = params.get("templates") or {}
        self.templates: Mapping[str, Mapping[str, str]] = templates
        self.subject: str | None = params.get("subject")
        self.message: str | None = params.get("message")
        self.default = str(params.get("default_locale") or "en")
        self.context = dict(context)
        self.runbook, self.scope = runbook, scope
        self.step_id = scope[1]
        self._by_locale: dict[str | None, tuple[str | None, _Pair]] = {}
        if not self.templates and self.message is None:
            raise ActionFailed("notify: give `templates` or `message`", retryable=False)

    def _pair(self, r: Recipient) -> tuple[str | None, _Pair]:
        got = self._by_locale.get(r.locale)
        if got is not None:
            return got
        locale: str | None = None
        subject_src, body_src = self.subject, self.message or ""
        if self.templates:
            locale, tried = pick_locale(r.locale, self.templates, self.default)
            if locale is None:
                raise ActionFailed(
                    f"notify: no template for {r.address or 'the webhook'} (tried "
                    f"{', '.join(tried)}; templates: {', '.join(self.templates)}); "
                    "set `default_locale` to one of the templates",
                    retryable=False,
                )
            chosen = self.templates[locale]
            subject_src, body_src = chosen.get("subject", self.subject), chosen["body"]
        where = f"templates.{locale}" if locale else ""
        pair = _Pair(
            self._prepare(subject_src, f"{where}.subject" if where else "subject"),
            self._prepare(body_src, f"{where}.body" if where else "message"),
        )
        self._by_locale[r.locale] = (locale, pair)
        return locale, pair

    def _prepare(self, source: str | None, where: str) -> tuple[Repeated, str] | None:
        if source is None:
            return None
        try:
            return Repeated(source, self.context), where
        except TemplateError as exc:
            raise ActionFailed(f"notify: {where}: {exc.message}", retryable=False) from None

    def render(self, r: Recipient) -> Message:
        locale, pair = self._pair(r)
        values = pair.values(r.as_context())
        subject = self._one(pair.subject, values, r)
        body = self._one(pair.body, values, r) or ""
        if subject is None:
            subject = f"{self.runbook}: {self.step_id}"
        return Message(r, locale, subject.strip(), body, self.message_id(r))

    def message_id(self, r: Recipient) -> str:
        run, step, attempt = self.scope
        return message_id(self.runbook, run, step, attempt, r.key)

    def _one(self, prepared: tuple[Repeated, str] | None, values: Any, r: Recipient) -> str | None:
        if prepared is None:
            return None
        template, where = prepared
        try:
            return template.render_values(values)
        except TemplateError as exc:
            who = r.address or "the webhook"
            raise ActionFailed(
                f"notify: {where} for {who}: {exc.message}", retryable=False
            ) from None


@dataclass(frozen=True)
class _Pair:
    subject: tuple[Repeated, str] | None
    body: tuple[Repeated, str] | None

    def values(self, recipient: Mapping[str, Any]) -> dict[str, Any]:
        """One recipient's names for both templates, built once (they share their context)."""
        for prepared in (self.subject, self.body):
            if prepared is not None:
                return prepared[0].values("recipient", recipient)
        return {"recipient": recipient}
