"""What a template does with secrets and with outside data, read from its syntax tree.

- **Outside data** is text the runbook does not write itself: ``steps.*.outputs``,
  ``failed_step.error``/``outputs``, ``recipient``, ``member``.  A name set from it (``{% set v
  = steps.q.outputs.stdout %}``), a ``with`` name, a namespace attribute (``{% set ns.v = … %}``
  taints ``ns``), a loop variable over it (``{% for line in … %}``), or a name bound to a root
  that holds it (``{% set s = steps %}``) is outside data too.  ``outside(expr)`` names what an expression reads of it, for the lint of ``| raw``
  and SQL text and for ``validate``'s refusal of outside data in a URL's host.
- **Secrets** go through the filters of ``sandbox.SECRET_FILTERS`` only.  ``secret_problems``
  finds, at ``validate``, the uses the sandbox would refuse at run time: another filter, an
  attribute, item or slice, a method or function call, ``%``, ``*``, a loop over a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .sandbox import COUNTING_FILTERS, SECRET_FILTERS, WHOLE_SECRETS


def is_outside(root: str, parts: list[str]) -> bool:
    """Whether ``root.parts`` is outside data or may hold some: ``steps``, ``steps.x``,
    ``steps[k]['outputs']``, ``failed_step`` whole (``{% set s = steps %}`` carries it)."""
    if root in ("recipient", "member"):
        return True
    if root == "failed_step":
        return not parts or parts[0] in ("error", "outputs", "*")
    return root == "steps" and (len(parts) < 2 or parts[1] in ("outputs", "*"))


def _chain(node: Any) -> tuple[Any, list[str], list[Any]]:
    """``a.b['c']``: (the innermost node, ["b", "c"], the computed index nodes)."""
    from jinja2 import nodes

    parts: list[str] = []
    computed: list[Any] = []
    cur: Any = node
    while isinstance(cur, (nodes.Getattr, nodes.Getitem)):
        if isinstance(cur, nodes.Getattr):
            parts.append(cur.attr)
        else:
            computed.append(cur.arg)
            arg: Any = cur.arg
            parts.append(str(arg.value) if isinstance(arg, nodes.Const) else "*")
        cur = cur.node
    parts.reverse()
    return cur, parts, computed


def outside(root: Any, tainted: dict[str, str] | None = None) -> Iterator[str]:
    """Outside-data references under ``root``, each as its longest chain
    (``steps.x.outputs.email``), and the local names that hold outside data."""
    from jinja2 import nodes

    tainted = tainted or {}
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)):
            stack.extend(node.iter_child_nodes())
            continue
        cur, parts, computed = _chain(node)
        stack.extend(computed)
        if not isinstance(cur, nodes.Name):
            stack.append(cur)
            continue
        if cur.name in tainted:
            yield tainted[cur.name]
        elif is_outside(cur.name, parts):
            yield ".".join([cur.name, *parts])


def outside_locals(ast: Any) -> dict[str, str]:
    """Names a template sets from outside data (``set``, ``for`` targets), each with the
    outside reference it holds; followed through chains of them."""
    from jinja2 import nodes

    found: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        bindings: list[tuple[Any, Any]] = []
        for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.With)):
            if isinstance(node, nodes.Assign):
                bindings.append((node.target, node.node))
            elif isinstance(node, nodes.AssignBlock):
                bindings.append((node.target, nodes.Output(node.body)))
            elif isinstance(node, nodes.For):
                bindings.append((node.target, node.iter))
            else:  # `{% with y = … %}`
                bindings.extend(zip(node.targets, node.values, strict=False))
        for target_node, source in bindings:
            refs = list(outside(source, found))
            if not refs:
                continue
            if isinstance(target_node, (nodes.Name, nodes.NSRef)):
                targets = [target_node.name]  # `{% set ns.v = … %}`: all of `ns`
            else:
                targets = [t.name for t in target_node.find_all(nodes.Name)]
            for name in targets:
                if name not in found:
                    found[name] = refs[0]
                    changed = True
    return found


def outside_under_raw(ast: Any) -> list[str]:
    """The outside data that reaches a ``| raw`` filter."""
    from jinja2 import nodes

    tainted = outside_locals(ast)
    found: dict[str, None] = {}
    for f in ast.find_all(nodes.Filter):
        if f.name == "raw":
            for name in outside(f.node, tainted):
                found[name] = None
    return list(found)


def outside_in(ast: Any) -> list[str]:
    """All outside data a template reads (``set``/``for`` names followed)."""
    found: dict[str, None] = {}
    for name in outside(ast, outside_locals(ast)):
        found[name] = None
    return list(found)


# -- secrets ---------------------------------------------------------------------------------


def secret_problems(ast: Any) -> list[tuple[int, str]]:
    """(template line, message) of each use of a secret the sandbox would refuse."""
    from jinja2 import nodes

    local: set[str] = set()

    def is_secret(node: Any) -> bool:
        if isinstance(node, (nodes.Getattr, nodes.Getitem)):
            cur, parts, _ = _chain(node)
            return isinstance(cur, nodes.Name) and cur.name == "secrets" and len(parts) == 1
        if isinstance(node, nodes.Name):
            return node.name in local
        if isinstance(node, nodes.Concat):
            return any(is_secret(n) for n in node.nodes)
        if isinstance(node, nodes.Filter):
            return node.name in SECRET_FILTERS and (
                is_secret(node.node) or any(is_secret(a) for a in node.args)
            )
        if isinstance(node, nodes.Add):
            return is_secret(node.left) or is_secret(node.right)
        if isinstance(node, nodes.CondExpr):
            return is_secret(node.expr1) or (node.expr2 is not None and is_secret(node.expr2))
        return False

    changed = True
    while changed:
        changed = False
        for a in ast.find_all(nodes.Assign):
            if (
                isinstance(a.target, nodes.Name)
                and a.target.name not in local
                and is_secret(a.node)
            ):
                local.add(a.target.name)
                changed = True
    out: list[tuple[int, str]] = []
    seen: set[tuple[int, str]] = set()

    def add(node: Any, message: str) -> None:
        key = (node.lineno or 1, message)
        if key not in seen:
            seen.add(key)
            out.append(key)

    allowed = ", ".join(sorted(SECRET_FILTERS))
    under = {id(n.node) for n in ast.find_all((nodes.Getattr, nodes.Getitem))}
    for node in ast.find_all(nodes.Name):
        if node.name == "secrets" and node.ctx == "load" and id(node) not in under:
            add(node, WHOLE_SECRETS)
    for call in ast.find_all(nodes.Call):  # `secrets.values()`, `secrets.items()`...
        callee = call.node
        if (
            isinstance(callee, nodes.Getattr)
            and isinstance(callee.node, nodes.Name)
            and callee.node.name == "secrets"
        ):
            add(call, WHOLE_SECRETS)
    for node in ast.find_all(nodes.Node):
        if isinstance(node, nodes.Filter):
            if node.name in SECRET_FILTERS or node.name in COUNTING_FILTERS:
                continue
            if (node.node is not None and is_secret(node.node)) or any(
                is_secret(a) for a in node.args
            ):
                add(
                    node,
                    f"`| {node.name}` cannot take a secret: a secret goes through "
                    f"{allowed} only (the masker must know every form it takes)",
                )
        elif isinstance(node, (nodes.Getattr, nodes.Getitem)) and is_secret(node.node):
            add(node, "a secret has no attributes, items or slices: use it whole")
        elif isinstance(node, nodes.Call):
            callee = node.node
            if (isinstance(callee, nodes.Getattr) and is_secret(callee.node)) or any(
                is_secret(a) for a in (*node.args, *(k.value for k in node.kwargs))
            ):
                add(node, "a secret cannot be passed to a method or function: use it whole")
        elif isinstance(node, (nodes.Mul, nodes.Mod, nodes.Pow, nodes.Sub, nodes.Div)):
            if is_secret(node.left) or is_secret(node.right):
                add(node, "a secret cannot be used with an arithmetic operator or `%`")
        elif isinstance(node, nodes.For) and is_secret(node.iter):
            add(node, "a secret cannot be iterated")
    return out
