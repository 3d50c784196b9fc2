"""The template sandbox: what a template may do, how much, and what it may do with a secret.

- **Limits.** A render is bounded: loop iterations, calls and lookups together
  (``MAX_STEPS``), wall time (``MAX_SECONDS``), the size of any text or list a template builds
  (``MAX_SIZE``: ``*``, ``+``, ``~``, ``**``, format widths, padding filters) and the size of
  what it writes (``MAX_OUTPUT``).  A render past a limit stops with a template error: it never
  hangs a plan, never holds the scheduler's thread past its signals and timeouts, and never
  exhausts memory.  ``range`` is capped by Jinja2's sandbox (100,000 items).
- **Statements.** ``macro``, ``call``, ``filter`` blocks, ``{% set %}…{% endset %}``,
  ``block``, ``extends``, ``include`` and ``import`` are refused where a template is parsed
  (``validate``: exit 2): they capture rendered text, where a secret would become plain text.
- **Secrets** reach templates as ``Secret`` values that render as themselves and go through
  ``SECRET_FILTERS`` only (``quote``, ``urlencode``, ``tojson``, ``b64encode``, ``upper``,
  ``lower``, ``e``, ``trim``, ``string``, ``default``, ``raw``), or ``~``/``+`` with other
  text.  Each text so derived stays a ``Secret`` and is handed to the run's masker (``seen``)
  before anything can print it, so every form a template makes of a secret is masked, chains
  included (``urlencode | lower``, ``upper | b64encode``).  Anything else — slicing, items,
  attributes and methods, other filters, ``%`` and ``format``, iterating, its Python ``repr``
  inside a list or mapping — is a template error (``secret_problems`` finds the plain cases at
  ``validate``).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

MAX_SIZE = 1_000_000  # characters (or items) of one value a template builds
MAX_OUTPUT = 4_000_000  # characters one render writes
MAX_STEPS = 2_000_000  # loop iterations, calls and lookups of one render
MAX_SECONDS = 2.0  # wall time of one render
MAX_POWER_BITS = 100_000  # bits of an integer `a ** b`
_CHECK_EVERY = 1024

SECRET_FILTERS = frozenset(
    {
        "quote",
        "urlencode",
        "tojson",
        "b64encode",
        "upper",
        "lower",
        "e",
        "escape",
        "trim",
        "string",
        "default",
        "d",
        "raw",
    }
)
COUNTING_FILTERS = frozenset({"length", "count"})  # a number: nothing of the secret's text
PADDING = frozenset({"center", "indent", "ljust", "rjust", "zfill", "expandtabs"})
REFUSED_STATEMENTS = {
    "Macro": "{% macro %}",
    "CallBlock": "{% call %}",
    "FilterBlock": "{% filter %}",
    "AssignBlock": "{% set %}…{% endset %}",
    "Block": "{% block %}",
    "Extends": "{% extends %}",
    "Include": "{% include %}",
    "Import": "{% import %}",
    "FromImport": "{% from … import %}",
}
_DICT_NAMES = frozenset(dir(dict))
_WIDTH = re.compile(r"\d{7,}")  # a format width or precision of a million or more


class Raw(str):
    """Text written as it is: ``| raw``, or a value already quoted or encoded for its place."""


class LimitError(Exception):
    """A render went past one of the limits above."""


class SecretMisuse(Exception):
    """A template tried to transform a secret into a form the masker cannot know."""


class Secret:
    """A secret's text (or a text holding one) inside a template: renders as itself, and is
    reported to the masker (``seen``) the moment it exists.  ``raw``: already quoted or
    vouched for (``| quote``, ``| raw``), written as it is in a command or a URL."""

    __slots__ = ("_raw", "_seen", "_text")

    def __init__(self, text: str, seen: Callable[[str], None] | None, raw: bool = False) -> None:
        self._text = str.__str__(text)
        self._seen = seen
        self._raw = raw
        if seen is not None:
            seen(self._text)

    @property
    def raw(self) -> bool:
        return self._raw

    def derive(self, text: str, raw: bool = False) -> Secret:
        return Secret(text, self._seen, raw)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        raise SecretMisuse(
            "a secret inside a list or mapping would be written in its Python form: "
            "write the secret itself (`{{ secrets.NAME }}`), or use `| tojson`"
        )

    def __format__(self, spec: str) -> str:
        raise SecretMisuse("a secret cannot go through `format` or `%`: use `~` to join text")

    def __iter__(self) -> Iterator[str]:
        raise SecretMisuse("a secret cannot be iterated or cut into pieces")

    def __getitem__(self, key: object) -> str:
        raise SecretMisuse("a secret cannot be indexed or sliced: use it whole")

    def __contains__(self, item: object) -> bool:
        raise SecretMisuse("a secret cannot be searched")

    def __bool__(self) -> bool:
        return bool(self._text)

    def __eq__(self, other: object) -> bool:
        return self._text == (other._text if isinstance(other, Secret) else other)

    def __hash__(self) -> int:
        return hash(self._text)

    def __add__(self, other: object) -> Secret:
        return self.derive(str(join_text([self, other])))

    def __radd__(self, other: object) -> Secret:
        return self.derive(str(join_text([other, self])))


class SecretsView(Mapping[str, "Secret"]):
    """``secrets`` as templates see it: ``secrets.NAME`` and ``secrets['NAME']`` give the
    ``Secret``; nothing else works on it (no iterating, ``.values()``, ``.items()``, length,
    text, truth or comparison), so an alias (``{% set s = secrets %}``) cannot list the
    secrets either.  The sandbox also refuses the bare name anywhere but before
    ``.NAME``/``[…]``."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: dict[str, Secret]) -> None:
        self._secrets = secrets

    def __getitem__(self, name: str) -> Secret:
        if isinstance(name, str) and name in self._secrets:
            return self._secrets[name]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        raise SecretMisuse(WHOLE_SECRETS)

    def __len__(self) -> int:
        raise SecretMisuse(WHOLE_SECRETS)

    def __contains__(self, name: object) -> bool:
        raise SecretMisuse(WHOLE_SECRETS)

    def __str__(self) -> str:
        raise SecretMisuse(WHOLE_SECRETS)

    def __repr__(self) -> str:
        raise SecretMisuse(WHOLE_SECRETS)

    def __format__(self, spec: str) -> str:
        raise SecretMisuse(WHOLE_SECRETS)

    def __bool__(self) -> bool:
        raise SecretMisuse(WHOLE_SECRETS)

    def __eq__(self, other: object) -> bool:
        raise SecretMisuse(WHOLE_SECRETS)

    __hash__ = None  # type: ignore[assignment]


WHOLE_SECRETS = (
    "`secrets` can only be used as `secrets.NAME` or `secrets['NAME']`: not listed, iterated, "
    "aliased, passed to a filter, test or function, or chosen by a condition"
)


def _refuse_secrets(value: Any) -> Any:
    raise SecretMisuse(WHOLE_SECRETS)


def holds_secret(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (Secret, SecretsView)):
        return True
    if depth > 20:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(holds_secret(v, depth + 1) for v in value)
    if isinstance(value, (KeysView, ValuesView, ItemsView)):  # `d.values()`, `d.items()`
        return any(holds_secret(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return any(holds_secret(v, depth + 1) for v in value.values())
    attrs = getattr(value, "_Namespace__attrs", None)  # `namespace(s=…)`
    if isinstance(attrs, dict):
        return any(holds_secret(v, depth + 1) for v in attrs.values())
    return False


def unwrap(value: Any) -> Any:
    """``value`` with every ``Secret`` as its plain text (for actions and serialisers)."""
    if isinstance(value, Secret):
        return str(value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, Mapping) and holds_secret(value):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def secrets_view(values: Mapping[str, str], seen: Callable[[str], None] | None) -> SecretsView:
    """``secrets`` as templates see them."""
    return SecretsView({name: Secret(value, seen) for name, value in values.items()})


def join_text(items: Iterable[Any]) -> Any:
    """``a ~ b``: plain text, or a ``Secret`` when one of the parts is (size-bounded)."""
    parts = list(items)
    text = "".join(str(p) for p in parts)
    _size(text)
    first = next((p for p in parts if isinstance(p, Secret)), None)
    return first.derive(text) if first is not None else text


# -- the budget of one render ----------------------------------------------------------------


class _Budget(threading.local):
    steps: int = 0
    deadline: float = 0.0
    active: int = 0


_BUDGET = _Budget()


class limited:
    """A render's budget, for the thread that renders (re-entrant: the outermost counts)."""

    def __enter__(self) -> None:
        if _BUDGET.active == 0:
            _BUDGET.steps = 0
            _BUDGET.deadline = time.monotonic() + MAX_SECONDS
        _BUDGET.active += 1

    def __exit__(self, *exc: object) -> None:
        _BUDGET.active -= 1


def tick() -> None:
    if not _BUDGET.active:
        return
    _BUDGET.steps += 1
    if _BUDGET.steps % _CHECK_EVERY == 0:
        if _BUDGET.steps > MAX_STEPS:
            raise LimitError(f"the template took more than {MAX_STEPS:,} steps")
        if time.monotonic() > _BUDGET.deadline:
            raise LimitError(f"the template took more than {MAX_SECONDS:g} s to render")


def _size(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_SIZE:
        raise LimitError(f"a value of more than {MAX_SIZE:,} characters or items")
    return value


def _loop(value: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one step of the budget per item."""
    if isinstance(value, Secret):
        iter(value)
    for item in value:
        tick()
        yield item


# -- the environment -------------------------------------------------------------------------


def make_sandbox(finalize: Callable[[Any], Any] | None) -> Any:
    """A new environment: Jinja2's immutable sandbox with the rules above."""
    from jinja2 import StrictUndefined, nodes
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

        def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
            ast = super()._parse(source, name, filename)
            for kind, shown in REFUSED_STATEMENTS.items():
                node = next(ast.find_all(getattr(nodes, kind)), None)
                if node is not None:
                    raise TemplateSyntaxError(
                        f"{shown} is not available in runbook templates (it captures rendered "
                        "text): write the expression where its value is used",
                        node.lineno,
                        name,
                        filename,
                    )
            return ast

        def _generate(self, source: Any, *args: Any, **kwargs: Any) -> Any:
            # every loop counts its items; every `~` keeps a secret a secret (templates and
            # bare expressions both come through here)
            for loop in source.find_all(nodes.For):
                loop.iter = nodes.Filter(loop.iter, "rb_loop", [], [], None, None)
                loop.iter.set_lineno(loop.lineno)
            # `secrets` only as `secrets.NAME` / `secrets['NAME']`: any other use is an error
            under = {id(n.node) for n in source.find_all((nodes.Getattr, nodes.Getitem))}
            for name in list(source.find_all(nodes.Name)):
                if name.name == "secrets" and name.ctx == "load" and id(name) not in under:
                    refuse = nodes.Filter(nodes.Const(None), "rb_secrets_whole", [], [], None, None)
                    _replace(source, name, refuse, nodes.Node)
            for concat in list(source.find_all(nodes.Concat)):
                joined = nodes.Filter(nodes.List(concat.nodes), "rb_join", [], [], None, None)
                _replace(source, concat, joined, nodes.Node)
            return super()._generate(source, *args, **kwargs)

        def getattr(self, obj: Any, attribute: str) -> Any:
            tick()
            if isinstance(obj, Secret):
                raise SecretMisuse(
                    f"a secret has no attribute {attribute!r}: use it whole, or through a "
                    f"filter ({', '.join(sorted(SECRET_FILTERS))})"
                )
            # `recipient.name` on plain data: the item, as the sandbox gives it when the
            # attribute is not there, without raising and catching AttributeError first (a
            # fifth of the cost of a message's templates); dict's own names go the usual way
            if type(obj) is dict and attribute not in _DICT_NAMES:
                try:
                    return obj[attribute]
                except KeyError:
                    pass
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            tick()
            if isinstance(obj, Secret):
                raise SecretMisuse("a secret cannot be indexed or sliced: use it whole")
            if (
                isinstance(argument, str)
                and argument.startswith("_")
                and not isinstance(obj, (dict, list, tuple))
            ):
                # nothing starting with `_` on an engine object, by item either; plain data
                # keeps its keys (`row['_id']`)
                return self.undefined(obj=obj, name=argument)
            return super().getitem(obj, argument)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            tick()
            if holds_secret(args) or holds_secret(kwargs):
                raise SecretMisuse(
                    "a secret cannot be passed to a function or method: use it whole, or "
                    f"through a filter ({', '.join(sorted(SECRET_FILTERS))})"
                )
            name = getattr(__obj, "__name__", "")
            if name in PADDING and any(
                isinstance(a, int) and a > MAX_SIZE for a in (*args, *kwargs.values())
            ):
                raise LimitError(f"`{name}` to more than {MAX_SIZE:,} characters")
            return _size(super().call(__context, __obj, *args, **kwargs))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            tick()
            if isinstance(left, Secret) or isinstance(right, Secret) or holds_secret(right):
                if operator == "+" and isinstance(left, (str, Secret)):
                    return join_text([left, right])
                raise SecretMisuse(f"a secret cannot be used with `{operator}`")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if (
                        isinstance(seq, (str, list, tuple))
                        and isinstance(n, int)
                        and len(seq) * max(n, 0) > MAX_SIZE
                    ):
                        raise LimitError(f"a value of more than {MAX_SIZE:,} characters or items")
            elif operator == "**" and isinstance(left, int) and isinstance(right, int):
                if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_POWER_BITS:
                    raise LimitError(f"an integer of more than {MAX_POWER_BITS:,} bits")
            elif operator == "%" and isinstance(left, str) and _WIDTH.search(left):
                raise LimitError(f"a format width of more than {MAX_SIZE:,} characters")
            return _size(super().call_binop(context, operator, left, right))

        def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            template = value.__self__

            def checked(*args: Any, **kwargs: Any) -> str:
                if holds_secret(args) or holds_secret(kwargs):
                    raise SecretMisuse("a secret cannot go through `format`: use `~` to join text")
                if _WIDTH.search(template):
                    raise LimitError(f"a format width of more than {MAX_SIZE:,} characters")
                return str(_size(wrapped(*args, **kwargs)))

            return checked

    env = Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    env.globals.pop("lipsum", None)  # text by the paragraph: nothing a runbook needs
    env.globals["range"] = safe_range  # at most 100,000 items
    env.filters["rb_loop"] = _loop
    env.filters["rb_join"] = join_text
    env.filters["rb_secrets_whole"] = _refuse_secrets
    return env


def guard_filters(env: Any) -> None:
    """Every filter of ``env`` under the rules for secrets and sizes (call last, once)."""
    for name, f in list(env.filters.items()):
        if name in ("rb_loop", "rb_join", "rb_secrets_whole"):
            continue
        env.filters[name] = _guarded(name, f)


def _guarded(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        tick()
        given = args[skip:]
        if not (holds_secret(given) or holds_secret(kwargs)):
            if name in PADDING and any(
                isinstance(a, int) and a > MAX_SIZE for a in (*given[1:], *kwargs.values())
            ):
                raise LimitError(f"`{name}` to more than {MAX_SIZE:,} characters")
            if name == "format" and given and isinstance(given[0], str) and _WIDTH.search(given[0]):
                raise LimitError(f"a format width of more than {MAX_SIZE:,} characters")
            return _size(f(*args, **kwargs))
        if name in COUNTING_FILTERS:
            return f(*args[:skip], *unwrap(list(given)), **unwrap(kwargs))
        if name not in SECRET_FILTERS:
            raise SecretMisuse(
                f"`| {name}` cannot take a secret (the masker could not know what it makes of "
                f"it); a secret goes through {', '.join(sorted(SECRET_FILTERS))} only"
            )
        origin = _first_secret([given, kwargs])
        assert origin is not None
        plain = [_plain(a) for a in given]  # a raw secret stays raw: `quote` keeps it once
        result = f(*args[:skip], *plain, **unwrap(kwargs))
        if isinstance(result, Secret):
            return result
        text = str.__str__(result) if isinstance(result, str) else str(result)
        return origin.derive(_size(text), raw=isinstance(result, Raw))

    return run


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return Raw(str(value)) if value.raw else str(value)
    return unwrap(value)


def _first_secret(values: Any) -> Secret | None:
    if isinstance(values, Secret):
        return values
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, (list, tuple, set, frozenset)):
        for v in values:
            found = _first_secret(v)
            if found is not None:
                return found
    return None


def _replace(tree: Any, old: Any, new: Any, node_type: Any) -> None:
    """Put ``new`` where ``old`` is in ``tree`` (an expression node inside a field)."""
    new.set_lineno(old.lineno)
    for parent in [tree, *tree.find_all(node_type)]:
        for field in parent.fields:
            value = getattr(parent, field, None)
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return
