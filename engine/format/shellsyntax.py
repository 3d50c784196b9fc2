"""Where a value lands in a shell command, read as /bin/sh reads it (SPEC §9: customer data
can never become shell syntax).

A value the engine writes into a command is shell-quoted: one word, whatever it holds.  That
is safe only where the shell reads a word: at the top level of a command or inside ``$( … )``.
Everywhere else the quotes do not protect it, and a value is refused (``validate``: exit 2 at
its ``{{``; at run time, for what only the rendered command shows: a step failure):

- inside a ``'…'``, ``"…"`` or ``$'…'`` literal, or ``${…}``: quoted inside quotes;
- inside a comment: a line break in the value ends the comment and the rest runs;
- inside a here-document (``<<EOF`` … ``EOF``) or as its delimiter: its lines are not words
  (``$(…)`` expands, a line equal to the delimiter ends it early);
- inside backquotes: the first backquote in the value ends the substitution;
- after ``eval``, and as the script of ``sh -c`` (``bash``, ``dash``…): re-read as code.

``Reader`` follows the shell's contexts on a stack; ``value()`` says where a value would land
now.  It reads the text between values; what a ``{% %}`` statement would write is unknown to
it (``validate``), which is why the rendered command is read again at run time.
"""

from __future__ import annotations

import re

WORD = ""  # a value lands in a word: quoted, it is one word
MESSAGES = {
    "'": "inside a '…' literal of a command: every `{{ }}` in a command is shell-quoted "
    "already, so close the quotes before it (e.g. 'failed: '{{ failed_step.error }})",
    "$'": "inside a $'…' literal of a command: every `{{ }}` in a command is shell-quoted "
    "already, so close the quotes before it",
    '"': 'inside a "…" literal of a command: every `{{ }}` in a command is shell-quoted '
    'already, so close the quotes before it (e.g. "failed: "{{ failed_step.error }})',
    "${": "inside `${…}`: the value would be quoted inside an expansion; set a variable "
    'first (x={{ … }}) and use "${x:-…}"',
    "#": "inside a shell comment: a line break in the value would end the comment and run "
    "the rest; take it out of the comment",
    "<<": "inside a here-document (<<EOF … EOF): its lines are not words (`$(…)` expands, a "
    "line equal to the delimiter ends it early); write the value with printf instead: "
    "printf '%s\\n' {{ … }} > FILE",
    "<<delimiter": "as a here-document's delimiter: write the delimiter in the command",
    "`": "inside backquotes `…`: the first backquote in the value would end them; use $( … )",
    "eval": "after `eval`, which reads its arguments as shell code again: pass the value as "
    "an argument of a command instead",
    "sh -c": "in the script of `sh -c`, which is shell code: pass the value as an argument "
    "instead: sh -c '… \"$1\"' sh {{ … }}",
}
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"})
# words after which the next word still starts a command
_KEEP_START = frozenset(
    {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time", "command", "builtin"}
)
_SCRIPT_FLAG = re.compile(r"-[A-Za-z]*c[A-Za-z]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class _Command:
    """One level of command reading: the top, or the inside of ``$( … )``."""

    __slots__ = ("depth", "eval", "script", "shell", "start", "word")

    def __init__(self) -> None:
        self.word = ""
        self.start = True  # the next word is a command name
        self.eval = False
        self.shell = False  # the command is a shell (`sh`, `bash`...)
        self.script = False  # the next word is its `-c` script
        self.depth = 0  # parentheses opened inside `$(`

    def end_word(self) -> None:
        w, self.word = self.word, ""
        if not w:
            return
        if self.script:
            self.script = False
        elif self.start:
            name = w.rsplit("/", 1)[-1]
            if name == "eval":
                self.eval = True
            if name in _SHELLS:
                self.shell = True
            self.start = name in _KEEP_START or bool(_ASSIGNMENT.match(w))
        elif self.shell and _SCRIPT_FLAG.fullmatch(w):
            self.script = True

    def separator(self) -> None:
        self.end_word()
        self.start, self.eval, self.shell, self.script = True, False, False, False


class Reader:
    """Reads a command's text; ``value()`` says where a value would land now."""

    def __init__(self) -> None:
        self.stack: list[str | _Command] = [_Command()]
        self.pending: list[tuple[str, bool]] = []  # here-documents to read: (delimiter, -)
        self.body: tuple[str, bool] | None = None
        self.line = ""  # the current line of a here-document's body
        self.delimiter: str | None = None  # the delimiter word being read after `<<`
        self.strip = False
        self.after = ""  # the text just read: `<<`, `<<-`, `$`, ...

    # -- where a value lands ----------------------------------------------------------
    def value(self) -> str:
        """The kind of place a value lands in now (``WORD``: a word, safe)."""
        if self.body is not None:
            return "<<"
        if self.delimiter is not None or self.after in ("<<", "<<-"):
            return "<<delimiter"
        for level in self.stack:
            if isinstance(level, str):
                return level
        top = self.stack[-1]
        assert isinstance(top, _Command)
        for level in self.stack:
            if isinstance(level, _Command) and level.eval:
                return "eval"
        if top.script:
            return "sh -c"
        return WORD

    def value_written(self) -> None:
        """A value was written here: part of the current word."""
        top = self.stack[-1]
        if isinstance(top, _Command):
            top.word += "\0"
        self.after = ""

    # -- reading text -------------------------------------------------------------------
    def text(self, chunk: str) -> None:
        i, n = 0, len(chunk)
        while i < n:
            ch = chunk[i]
            if self.body is not None:
                i = self._body(chunk, i)
                continue
            if self.delimiter is not None or self.after in ("<<", "<<-"):
                i = self._delimiter(chunk, i)
                continue
            top = self.stack[-1]
            if isinstance(top, _Command):
                i = self._command(top, chunk, i)
                continue
            if top == "#":
                if ch == "\n":
                    self.stack.pop()
                    self._newline()
            elif top == "'":
                if ch == "'":
                    self.stack.pop()
            elif top in ("$'", "`"):
                if ch == "\\":
                    i += 1
                elif ch == top[-1]:
                    self.stack.pop()
            elif top == '"':
                if ch == "\\":
                    i += 1
                elif ch == '"':
                    self.stack.pop()
                elif ch == "`":
                    self.stack.append("`")
                elif ch == "$" and chunk.startswith("(", i + 1):
                    self.stack.append(_Command())
                    i += 1
                elif ch == "$" and chunk.startswith("{", i + 1):
                    self.stack.append("${")
                    i += 1
            elif top == "${":
                if ch == "\\":
                    i += 1
                elif ch == "}":
                    self.stack.pop()
                elif ch in "'\"":
                    self.stack.append(ch)
            i += 1

    def _command(self, cmd: _Command, chunk: str, i: int) -> int:
        ch = chunk[i]
        after, self.after = self.after, ""
        if ch in " \t":
            cmd.end_word()
        elif ch == "\n":
            cmd.separator()
            self._newline()
        elif ch == "\\":
            if chunk.startswith("\n", i + 1):
                return i + 2  # a line continuation
            cmd.word += chunk[i : i + 2]
            return i + 2
        elif ch in "'\"`":
            # a quoted part of a word: its text is not followed (`'eval'` is not `eval`)
            self.stack.append("$'" if ch == "'" and after == "$" else ch)
            cmd.word += "\1"
        elif ch == "#" and not cmd.word:
            cmd.end_word()
            self.stack.append("#")
        elif ch == "$" and chunk.startswith("(", i + 1):
            cmd.word += "$("
            inner = _Command()
            self.stack.append(inner)
            return i + 2
        elif ch == "$" and chunk.startswith("{", i + 1):
            cmd.word += "${"
            self.stack.append("${")
            return i + 2
        elif ch == "$":
            cmd.word += ch
            self.after = "$"
        elif ch == "(":
            cmd.separator()
            cmd.depth += 1
        elif ch == ")":
            if cmd.depth == 0 and len(self.stack) > 1:
                cmd.end_word()
                self.stack.pop()
            else:
                cmd.separator()
                cmd.depth = max(0, cmd.depth - 1)
        elif ch in ";&|":
            cmd.separator()
        elif chunk.startswith("<<<", i):  # a here-string: a word follows
            cmd.end_word()
            return i + 3
        elif chunk.startswith("<<", i):
            cmd.end_word()
            if chunk.startswith("-", i + 2):
                self.after, self.strip = "<<-", True
                return i + 3
            self.after, self.strip = "<<", False
            return i + 2
        elif ch in "<>":
            cmd.end_word()
        else:
            cmd.word += ch
        return i + 1

    def _delimiter(self, chunk: str, i: int) -> int:
        """The word after ``<<``: the delimiter, quotes removed."""
        ch = chunk[i]
        if self.delimiter is None:
            if ch in " \t":
                return i + 1
            self.delimiter = ""
            self.after = ""
        if ch in " \t\n;&|<>()":
            self.pending.append((self.delimiter.replace("'", "").replace('"', ""), self.strip))
            self.delimiter = None
            return i  # the character is read again, outside the delimiter
        self.delimiter += chunk[i : i + 2] if ch == "\\" else ch
        return i + (2 if ch == "\\" else 1)

    def _newline(self) -> None:
        if self.pending:
            self.body = self.pending.pop(0)
            self.line = ""

    def _body(self, chunk: str, i: int) -> int:
        """A here-document's lines, up to the line that is its delimiter."""
        assert self.body is not None
        end = chunk.find("\n", i)
        if end < 0:
            self.line += chunk[i:]
            return len(chunk)
        self.line += chunk[i:end]
        delimiter, strip = self.body
        line = self.line.lstrip("\t") if strip else self.line
        self.line = ""
        if line == delimiter:
            self.body = None
            self._newline()
        return end + 1


def misplaced(pieces: list[tuple[str, int, str]], vouched: set[int]) -> list[tuple[int, str]]:
    """Each value of a command (``(kind, offset, text)`` pieces: "text" or "{{") that lands
    where a quoted word is not safe: ``(offset, kind)``.  Values at ``vouched`` offsets (``|
    raw``: the author places them) are not reported, but still read as part of a word."""
    reader = Reader()
    found: list[tuple[int, str]] = []
    for kind, offset, text in pieces:
        if kind == "text":
            reader.text(text)
        elif kind == "{{":
            where = reader.value()
            if where != WORD and offset not in vouched:
                found.append((offset, where))
            reader.value_written()
    return found
