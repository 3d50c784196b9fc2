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
- after ``eval`` or ``trap``, and as the script of ``sh -c`` (``bash``, ``dash``…): re-read as code,
  wherever the interpreter's name stands in the simple command (``env sh -c``, ``timeout 5
  sh -c``, ``find … -exec sh -c``, ``sudo … sh -c``, ``sh -c --``), and the code of
  ``python -c``, ``perl -e``, ``ruby -e``, ``node -e``, ``php -r``, awk's and sed's program,
  ``su -c``, ``env -S``;
- anywhere in a pipeline, here-string or ``<( … )`` that feeds a shell or interpreter reading
  its code from stdin (``printf … | sh``, ``bash <<< …``, ``bash <( … )``): found when that
  command is read, so ``finish()`` names them.

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
    "eval": "after `eval` (or as `trap`'s action), which reads its arguments as shell code "
    "again: pass the value as an argument of a command instead",
    "sh -c": "in the script of `sh -c`, which is shell code: pass the value as an argument "
    "instead: sh -c '… \"$1\"' sh {{ … }}",
    "code": "in the code an interpreter runs (`python -c`, `perl -e`, `ruby -e`, `node -e`, "
    "`php -r`, awk's or sed's program, `su -c`, `env -S`): pass the value as an argument "
    "instead: python3 -c 'import sys; print(sys.argv[1])' {{ … }}",
    "stdin": "in the input of a shell or interpreter that reads its code from stdin (`printf "
    "… | sh`, `sh <<< …`, `bash <(…)`): the value would run as code; pass it as an argument "
    "instead: sh -c '… \"$1\"' sh {{ … }}",
}
# interpreters, by the kind of code argument they take (a word anywhere in a simple command
# names one: after `env`, `sudo`, `timeout 5`, `find … -exec`, `xargs`, `busybox`…)
_KINDS = (
    (re.compile(r"(?:ba|da|z|k|a|mk|po|ya)?sh|ksh93"), "sh"),
    (re.compile(r"python[0-9.]*|pypy[0-9.]*"), "py"),
    (re.compile(r"perl[0-9.]*"), "perl"),
    (re.compile(r"ruby[0-9.]*|irb"), "ruby"),
    (re.compile(r"node(?:js)?|deno|bun"), "node"),
    (re.compile(r"php[0-9.]*"), "php"),
    (re.compile(r"[gmn]?awk"), "awk"),
    (re.compile(r"g?sed"), "sed"),
    (re.compile(r"su|runuser"), "su"),
    (re.compile(r"env"), "env"),
)
# a word that makes the next word code, per kind (`-c`, `-e`, `--eval`...); the same text
# directly followed by a value in one word (`-c{{ x }}`, `--command={{ x }}`) is code too
_CODE_FLAG = {
    "sh": re.compile(r"-[A-Za-z]*c[A-Za-z]*"),
    "py": re.compile(r"-[A-Za-z]*c"),
    "perl": re.compile(r"-[A-Za-z]*[eEmM]"),
    "ruby": re.compile(r"-[A-Za-z]*e"),
    "node": re.compile(r"-[A-Za-z]*[ep]|--eval|--print"),
    "php": re.compile(r"-[A-Za-z]*[rBRE]|--run|--process-(?:begin|code|end)"),
    "awk": re.compile(r"-e|--source"),
    "sed": re.compile(r"-[A-Za-z]*e|--expression"),
    "su": re.compile(r"-[A-Za-z]*c|--command|--session-command"),
    "env": re.compile(r"-[A-Za-z]*S|--split-string"),
}
_INLINE = {
    "py": re.compile(r"-[A-Za-z]*c"),
    "perl": re.compile(r"-[A-Za-z]*[eEmM]"),
    "ruby": re.compile(r"-[A-Za-z]*e"),
    "node": re.compile(r"-[A-Za-z]*[ep]|--eval=|--print="),
    "php": re.compile(r"-[A-Za-z]*[rBRE]|--run=|--process-(?:begin|code|end)="),
    "awk": re.compile(r"--source="),
    "sed": re.compile(r"-[A-Za-z]*e|--expression="),
    "su": re.compile(r"-[A-Za-z]*c|--command=|--session-command="),
    "env": re.compile(r"-[A-Za-z]*S|--split-string="),
}
# options that take the next word as their argument (not an operand)
_OPTION_ARG = {
    "sh": frozenset({"-o", "+o", "-O", "+O"}),
    "awk": frozenset({"-F", "-v", "-f", "-i", "-l", "--file", "--include", "--load"}),
    "sed": frozenset({"-f", "--file", "-l"}),
}
_STDIN_KINDS = frozenset({"sh", "py", "perl", "ruby", "node", "php"})
# words after which the next word still starts a command
_KEEP_START = frozenset(
    {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time", "command", "builtin"}
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _kind(word: str) -> str | None:
    if "\0" in word:
        return None
    name = word.rsplit("/", 1)[-1]
    for pattern, kind in _KINDS:
        if pattern.fullmatch(name):
            return kind
    return None


class _Command:
    """One level of command reading: the top, or the inside of ``$( … )`` / ``<( … )``."""

    __slots__ = (
        "code_next", "code_operand", "depth", "done", "eval", "flagged", "herestring", "inputs",
        "kind", "name", "operands", "options_done", "pipe", "program", "redirect", "seen",
        "skip_next", "start", "stdin", "stdin_flag", "values", "word",
    )  # fmt: skip

    def __init__(self, flagged: set[int] | None = None) -> None:
        self.word = ""
        self.depth = 0  # parentheses opened inside `$(`
        self.flagged: set[int] = flagged if flagged is not None else set()
        self.pipe: list[int] = []  # values of the pipeline's earlier commands (its stdin)
        self.program = False  # a `<( … )` process substitution
        self.seen: list[int] = []  # every value written at this level
        self._reset()

    def _reset(self) -> None:
        self.start = True  # the next word is a command name
        self.name = ""
        self.eval = False
        self.kind: str | None = None  # the interpreter the command runs, if any
        self.code_next = False  # the next word is code (`-c`, `-e`)
        self.code_operand = False  # the next operand is code (sh's script, awk's program)
        self.skip_next = False  # the next word is an option's argument
        self.options_done = False
        self.operands = 0
        self.stdin_flag = False  # `sh -s`: the script comes from stdin
        self.done = False  # the interpreter's code was given (later names are its arguments)
        self.herestring = False  # the word being read follows `<<<`
        self.redirect = False  # the word being read is a redirection's target
        self.values: list[int] = []  # values written in this simple command
        self.stdin: list[int] = []  # values fed to its stdin (pipeline, here-string)
        self.inputs: list[int] = []  # values in its `<( … )` process substitutions

    def code_here(self) -> bool:
        """Whether a value written now lands in code of the command's interpreter."""
        if self.herestring or self.redirect or self.skip_next:
            return False
        if self.code_next:
            return True
        partial = self.word.replace("\0", "")
        inline = _INLINE.get(self.kind or "")
        if inline is not None and partial and inline.match(partial):
            return True
        return self.code_operand and not partial.startswith(("-", "+"))

    def _enter(self, kind: str) -> None:
        self.kind = kind
        self.code_next = self.code_operand = self.skip_next = False
        self.options_done = self.stdin_flag = False
        self.operands = 0
        # awk and sed: the first operand is the program, unless `-f`/`-e` gives it
        self.code_operand = kind in ("awk", "sed")

    def end_word(self) -> None:
        w, self.word = self.word, ""
        if not w:
            return
        if self.herestring or self.redirect:
            self.herestring = self.redirect = False
            return
        if self.code_next:
            self.code_next = False
            self.done = True
            if self.kind in ("awk", "sed"):
                self.code_operand = False
            return
        if self.skip_next:
            self.skip_next = False
            return
        kind = _kind(w)
        if self.start:
            name = w.rsplit("/", 1)[-1]
            self.name = name
            if name in ("eval", "trap"):  # `trap CODE SIGNAL`: code run later
                self.eval = True
            self.start = name in _KEEP_START or bool(_ASSIGNMENT.match(w))
            if kind is not None:
                self._enter(kind)
            return
        if kind is not None and not self.done and (kind != "env" or self.kind is None):
            self._enter(kind)
            return
        if self.kind is None:
            return
        option = not self.options_done and w[:1] in ("-", "+") and w not in ("-", "+")
        if w == "--" and not self.options_done:
            self.options_done = True
            return
        if option:
            flag = _CODE_FLAG.get(self.kind)
            if flag is not None and flag.fullmatch(w):
                if self.kind == "sh":
                    self.code_operand = True
                else:
                    self.code_next = True
                return
            if self.kind == "sh" and "s" in w[1:] and w[:2] != "--":
                self.stdin_flag = True
            if self.kind in ("awk", "sed") and (w in ("-f", "--file") or w.startswith("--file=")):
                self.code_operand = False
            if w in _OPTION_ARG.get(self.kind, ()):
                self.skip_next = True
            return
        if self.code_operand:
            self.code_operand = False
            self.done = True
        self.operands += 1
        if self.kind == "sh":
            self.options_done = True

    def reads_code_from_stdin(self) -> bool:
        if self.kind not in _STDIN_KINDS or self.done or self.code_operand or self.code_next:
            return False
        return self.operands == 0 or self.stdin_flag

    def separator(self, pipe: bool = False, group: bool = False) -> None:
        """The simple command ends: at `;`, `&&`, a line break...; `|` feeds the next one."""
        self.end_word()
        if self.kind is not None and self.reads_code_from_stdin():
            self.flagged.update(self.stdin)
        if self.kind in _STDIN_KINDS or self.name in (".", "source"):
            self.flagged.update(self.inputs)
        carried = self.pipe + self.values + self.inputs if pipe else []
        if group:  # `| ( sh )`, `| { sh; }`: the group reads the pipe
            carried = self.stdin
        self._reset()
        self.stdin = list(carried)
        self.pipe = carried


class Reader:
    """Reads a command's text; ``value()`` says where a value would land now."""

    def __init__(self) -> None:
        self.flagged: set[int] = set()  # values found later to feed an interpreter's stdin
        self.count = 0  # values written so far
        self.stack: list[str | _Command] = [_Command(self.flagged)]
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
        for level in self.stack:  # `sh -c $(printf %s VALUE)`: the output is the script
            if isinstance(level, _Command) and level.code_here():
                return "sh -c" if level.kind in ("sh", "su") else "code"
        return WORD

    def value_written(self) -> None:
        """A value was written here: part of the current word."""
        index = self.count
        self.count += 1
        for level in self.stack:
            if isinstance(level, _Command):
                level.values.append(index)
                level.seen.append(index)
        top = self.stack[-1]
        if isinstance(top, _Command):
            if top.herestring:
                top.stdin.append(index)
            top.word += "\0"
        self.after = ""

    def finish(self) -> set[int]:
        """The end of the command: the values (by the order they were written) that feed an
        interpreter's code through its stdin (``printf VALUE | sh``, ``sh <<< VALUE``)."""
        if self.body is None and self.delimiter is None:
            top = self.stack[0]
            if isinstance(top, _Command) and len(self.stack) == 1:
                top.separator()
        return self.flagged

    def _quoted(self, ch: str) -> None:
        """A character inside quotes: part of the word (`'sh' -c` runs sh)."""
        if len(self.stack) > 1:
            below = self.stack[-2]
            if isinstance(below, _Command):
                below.word += ch

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
                else:
                    self._quoted(ch)
            elif top in ("$'", "`"):
                if ch == "\\":
                    i += 1
                elif ch == top[-1]:
                    self.stack.pop()
            elif top == '"':
                if ch == "\\":
                    self._quoted(chunk[i + 1 : i + 2])
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
                else:
                    self._quoted(ch)
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
            cmd.word += "$" if ch == "'" and after == "$" else ""
            cmd.word += "`" if ch == "`" else ""
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
            cmd.separator(group=True)
            cmd.depth += 1
        elif ch == ")":
            if cmd.depth == 0 and len(self.stack) > 1:
                cmd.separator()
                self.stack.pop()
                parent = self.stack[-1]
                if cmd.program and isinstance(parent, _Command):
                    parent.inputs.extend(cmd.seen)
            else:
                cmd.separator()
                cmd.depth = max(0, cmd.depth - 1)
        elif ch in "<>" and chunk.startswith("(", i + 1):  # `<( … )`: a file's name
            cmd.word += "<("
            inner = _Command(self.flagged)
            inner.program = True
            self.stack.append(inner)
            return i + 2
        elif chunk.startswith(("||", "&&", ";;"), i):
            cmd.separator()
            return i + 2
        elif chunk.startswith("|&", i):
            cmd.separator(pipe=True)
            return i + 2
        elif ch == "|":
            cmd.separator(pipe=True)
        elif chunk.startswith("&>", i):
            return self._redirect(cmd, chunk, i + 1)
        elif ch in ";&":
            cmd.separator()
        elif chunk.startswith("<<<", i):  # a here-string: a word follows
            cmd.end_word()
            cmd.herestring = True
            return i + 3
        elif chunk.startswith("<<", i):
            cmd.end_word()
            if chunk.startswith("-", i + 2):
                self.after, self.strip = "<<-", True
                return i + 3
            self.after, self.strip = "<<", False
            return i + 2
        elif ch in "<>":
            return self._redirect(cmd, chunk, i)
        else:
            cmd.word += ch
        return i + 1

    def _redirect(self, cmd: _Command, chunk: str, i: int) -> int:
        """``>``, ``2>>``, ``>&``, ``<``...: the next word is a target, not an argument."""
        if cmd.word.isdigit():
            cmd.word = ""  # the descriptor of `2>`
        cmd.end_word()
        i += 1
        while i < len(chunk) and chunk[i] in ">&|":
            i += 1
        cmd.redirect = True
        return i

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
    offsets: list[int] = []
    for kind, offset, text in pieces:
        if kind == "text":
            reader.text(text)
        elif kind == "{{":
            where = reader.value()
            if where != WORD and offset not in vouched:
                found.append((offset, where))
            offsets.append(offset)
            reader.value_written()
    reported = {offset for offset, _ in found}
    for index in sorted(reader.finish()):
        offset = offsets[index]
        if offset not in vouched and offset not in reported:
            found.append((offset, "stdin"))
    return sorted(found)
