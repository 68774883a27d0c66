"""Frozen pydantic base for every configuration people edit (profiles, plans, cards)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError, LivescopeError

__all__ = [
    "FrozenModel",
    "check_output_folder",
    "format_validation_error",
    "install_command",
    "json_object",
    "json_safe",
    "past_limit",
    "pip_install_command",
    "read_jsonl",
    "read_yaml",
    "replace_path",
    "while_locked",
    "write_atomic",
]

_M = TypeVar("_M", bound="FrozenModel")
_T = TypeVar("_T")


def json_safe(obj: Any) -> Any:
    """Return ``obj`` with every non-finite float replaced by None (JSON has no NaN).

    Dicts, lists and tuples are walked (tuples come back as lists, as JSON
    writes them); anything else is returned as it is.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def install_command(extra: str) -> str:
    """Return the command that installs livescope's optional ``extra`` into this Python.

    For the hint of an error message, e.g. ``install_command("viewer")``.
    livescope is not on PyPI, and a bare ``pip`` may be another Python's: it is
    this Python's ``-m pip``, and from a source checkout (an editable install, as
    ``python dev.py`` makes in ``.venv``) that checkout's extra,
    ``-e "<checkout>[extra]"``; otherwise ``"livescope[extra]"``, which pip takes
    from the livescope installed here. Quoted for this platform's shell: POSIX
    quoting, or double quotes on Windows, as cmd.exe takes them (PowerShell runs
    a quoted program path, e.g. one under ``C:/Program Files``, only after ``&``).
    """
    quote = _double_quoted if sys.platform == "win32" else shlex.quote
    checkout = _source_checkout()
    # (the extra quoted: zsh takes "[...]" for a pattern)
    target = f"-e {quote(f'{checkout}[{extra}]')}" if checkout else quote(f"livescope[{extra}]")
    return f"{_this_pip()} install {target}"


def past_limit(value: float, limit: float, decimals: int = 2) -> str:
    """Return ``value``, over ``limit``, with the decimals that show it is over.

    ``decimals``, or more where fewer round it to the limit or below: "would get
    1.00 s; ... = 1 s" read as within it (1 s booked, 1 ms more asked for).
    """
    for digits in range(decimals, 10):
        if not float(text := f"{value:.{digits}f}") <= limit:  # (NaN: "nan")
            return text
    return f"{value!r}"


def pip_install_command(requirement: str) -> str:
    """Return the command that installs a package ``requirement`` into this Python.

    For the hint of an error message where a package, not an extra of
    livescope's, is missing: this Python's ``-m pip`` with the requirement
    quoted, as `install_command` quotes (double quotes on Windows: cmd.exe takes
    no single ones, and reads > and < as redirects).
    """
    quote = _double_quoted if sys.platform == "win32" else shlex.quote
    return f"{_this_pip()} install {quote(requirement)}"


def _this_pip() -> str:
    """Return this Python's ``-m pip``, its path quoted where the shell needs it."""
    exe = sys.executable
    # (quoted on Windows only where it must be: PowerShell runs a quoted one only after "&")
    if sys.platform != "win32":
        exe = shlex.quote(exe)
    elif re.search(r"[^\w@+=:,./\\-]", exe):
        exe = _double_quoted(exe)
    return f"{exe} -m pip"


def _double_quoted(text: str) -> str:
    """Double-quote ``text`` (cmd.exe takes no single quotes; no Windows path holds ``"``)."""
    return f'"{text}"'


def _source_checkout() -> Path | None:
    """Find the source checkout livescope runs from (an editable install), or None.

    The folder above the package when it holds ``pyproject.toml``, else the one
    pip recorded for an editable install in ``direct_url.json`` (PEP 610) if it
    still holds one.
    """
    here = Path(__file__).resolve().parents[2]  # (livescope/schema/_base.py)
    if (here / "pyproject.toml").is_file():
        return here
    from importlib import metadata
    from urllib.parse import urlsplit
    from urllib.request import url2pathname  # (not at module level: it imports http, email)

    try:
        record = metadata.distribution("livescope").read_text("direct_url.json")
        info = json.loads(record or "{}")
        url = urlsplit(info["url"])
        editable = bool(info.get("dir_info", {}).get("editable"))
    except (metadata.PackageNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None  # (not installed, or a record that says nothing)
    if not editable or url.scheme != "file":
        return None
    # (a UNC path, file://server/share/..., keeps its server)
    where = url.path if url.netloc in ("", "localhost") else f"//{url.netloc}{url.path}"
    folder = Path(url2pathname(where))
    return folder if (folder / "pyproject.toml").is_file() else None


def check_input_folder(path: Path) -> None:
    """Refuse ``path`` unless it is an existing folder, saying which it is not."""
    if not path.exists():
        raise LivescopeError(f"{path} does not exist")
    if not path.is_dir():
        raise LivescopeError(f"{path} is not a folder")


def check_output_folder(path: Path, *, empty: bool = False) -> None:
    """Check that ``path`` is, or can be made, an output folder (nothing is created).

    ``empty``: an existing folder must hold nothing.

    Raises
    ------
    LivescopeError
        if ``path`` or one of its parents is a file, the nearest existing
        parent cannot be written to, or (``empty``) it holds something, naming it.

    """
    if path.exists() and not path.is_dir():
        raise LivescopeError(f"{path} is a file; the output must be a new folder")
    if empty and path.is_dir() and any(path.iterdir()):
        raise LivescopeError(f"{path} is not empty; choose a new output folder")
    parent = path.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LivescopeError(
            f"cannot create the output folder {path}: {parent} is a file, not a folder"
        )
    if not path.exists() and not os.access(parent, os.W_OK):
        raise LivescopeError(f"cannot create the output folder {path}: {parent} is not writable")


def read_jsonl(
    path: str | Path, *, what: str = "record", live: bool = False, missing_ok: bool = True
) -> list[dict[str, Any]]:
    """Read a log of one JSON object per line, written by appending (results, decisions).

    A last line without its newline is left out: the one being written when a
    process was killed (or the disk filled), said with a warning; or, with
    ``live``, the one being written now (no warning). Blank lines are skipped.
    A missing file reads as no records unless ``missing_ok`` is False.

    Raises
    ------
    LivescopeError
        if a complete line is not a JSON object (the log was damaged or edited),
        naming the file, the line and ``what`` it should hold.
    FileNotFoundError
        if the file is missing and ``missing_ok`` is False.

    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    except UnicodeDecodeError as exc:
        raise LivescopeError(f"{p}: not a UTF-8 text log ({exc.reason})") from None
    lines = text.split("\n")
    if lines[-1].strip() and not live:
        logging.getLogger("livescope").warning(
            "%s: its last line was cut short (a process killed mid-write); left out", p
        )
    return [rec for n, line in enumerate(lines[:-1], start=1)
            if (rec := jsonl_record(line, p, n, what)) is not None]  # fmt: skip


def read_jsonl_counting(
    path: str | Path, *, what: str = "record"
) -> tuple[list[dict[str, Any]], int]:
    """Return the JSON objects of a log's lines, and how many lines are damaged.

    Read as `read_jsonl` reads (a missing file holds none; a last line without
    its newline, the one a killed process was writing, is left out and said;
    blank lines are skipped), but a whole line that is no JSON object (one a
    killed process left half written and the next one appended to, bytes of a
    full disk, an editor's; not UTF-8 either) is counted, not raised: for
    readers that must go on past it (a worker resuming or ending, a run's
    summary). Read line by line.
    """
    p = Path(path)
    recs: list[dict[str, Any]] = []
    damaged = 0
    try:
        f = p.open("rb")
    except FileNotFoundError:
        return recs, damaged
    with f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                if raw.strip():
                    logging.getLogger("livescope").warning(
                        "%s: its last line was cut short (a process killed mid-write); left out",
                        p,
                    )
                break
            try:
                rec = jsonl_record(raw.decode("utf-8"), p, n, what)
            except (UnicodeDecodeError, LivescopeError):
                damaged += 1
                continue
            if rec is not None:
                recs.append(rec)
    return recs, damaged


def jsonl_record(line: str | bytes, path: Path, n: int, what: str) -> dict[str, Any] | None:
    """Return line ``n`` of the JSON-lines file ``path`` as a dict (None: a blank line).

    Raises `LivescopeError` naming the file, the line and ``what`` it should hold
    if the line is not a JSON object.
    """
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except ValueError as exc:
        raise LivescopeError(f"{path}, line {n}: not a JSON {what} ({exc})") from None
    except RecursionError:  # (a damaged line of thousands of "[": a traceback otherwise)
        raise LivescopeError(f"{path}, line {n}: not a JSON {what} (nested too deep)") from None
    if not isinstance(rec, dict):
        raise LivescopeError(
            f"{path}, line {n}: a {what} is a JSON object, not {type(rec).__name__}"
        )
    return rec


def write_atomic(path: str | Path, data: str | bytes | memoryview) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path``, never half-written.

    A reader sees the old file or the new one: the data goes to a temporary
    file beside it (named for this process and thread, so concurrent writers
    never share one), then replaces it. On Windows the replace fails while
    another process has the file open: it is retried for up to a second. A
    write that fails (the disk is full, a text UTF-8 cannot encode, Ctrl-C)
    leaves the old file as it was and no temporary file behind.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        while_locked(lambda: tmp.replace(target))
    except BaseException:
        # (not only OSError: a text with a lone surrogate fails to encode after the
        # file was made, and each such write left a .tmp file in the run folder)
        with contextlib.suppress(OSError):  # (the write's error is the one to see)
            tmp.unlink(missing_ok=True)
        raise
    return target


def while_locked(op: Callable[[], _T]) -> _T:
    """Return ``op()``, tried again every 20 ms for up to a second while PermissionError.

    On Windows a file another process has open (a reader of ``bus.json``, a
    virus scanner) cannot be replaced or removed until it is closed, nor opened
    while it is being replaced; the last PermissionError is raised.
    """
    for _ in range(49):
        try:
            return op()
        except PermissionError:
            time.sleep(0.02)
    return op()  # (the 50th try: its PermissionError is raised)


def replace_path(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` to ``dst`` (`os.replace`), retried for up to a second while refused.

    On Windows a folder cannot be renamed while a file in it is open (a viewer,
    the search indexer, a virus scanner): PermissionError, raised once a second
    of retries has not helped.
    """
    while_locked(lambda: os.replace(src, dst))


def remove_file(path: str | Path) -> bool:
    """Remove ``path`` if it is there; return whether it is gone. Never raises.

    On Windows a file another process has open cannot be removed: that is
    retried for up to a second (like `write_atomic`'s replace), then logged and
    left, so that a caller closing its sockets after it still does.
    """
    try:
        while_locked(lambda: Path(path).unlink(missing_ok=True))
    except PermissionError:
        logging.getLogger("livescope").warning(
            "could not remove %s: another program has it open", path
        )
        return False
    except OSError as exc:
        logging.getLogger("livescope").warning("could not remove %s (%s)", path, exc)
        return False
    return True


_DURATION_ERRORS = ("time_delta_parsing", "time_delta_type")
"""pydantic's error types for a duration (``timedelta``: a time plan's interval or
duration) it cannot read, such as ``2 min``."""


def format_validation_error(err: ValidationError, data: Any = None) -> list[str]:
    """Return one line per error, each starting with its dotted field path.

    ``data``: what was validated (the file's mapping), if the caller has it:
    it tells a key the user wrote from the name pydantic gives a union's
    member (see `_likeliest_branches`).

    Examples
    --------
    ``camera.bit_depth: Input should be less than or equal to 16 (got 20)``

    """
    lines: list[str] = []
    errors = err.errors(include_url=False)
    for e in _likeliest_branches(errors, 0, _model_names(), data):
        loc = ".".join(str(part) for part in _with_index(tuple(e["loc"]), e, data)) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not part of the schema; check its spelling)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        got = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            shown = repr(got)  # (shortened: a decision's 1 MB string came back whole)
            msg = f"{msg} (got {shown if len(shown) <= 200 else shown[:200] + '…'})"
        if e["type"] in _DURATION_ERRORS:  # (pydantic's own words: "invalid character in hour")
            msg += f"; durations are seconds{_seconds_hint(got)}"
        if (line := f"{loc}: {msg}") not in lines:
            lines.append(line)
    return lines


def _seconds_hint(got: Any) -> str:
    """Say how to write a duration pydantic could not read (after "durations are seconds").

    A number YAML read as text (in quotes, or, as PyYAML reads YAML 1.1, ``1e3`` or
    ``1.5e3``: an exponent is a number only with a dot and a sign, ``1.5e+3``) is
    said as the number to write, without quotes: the example alone (120 for 2 min)
    told someone who wrote ``'120'`` to write 120. A negative one is not suggested.
    """
    try:  # (a long text is no number anyone meant: its repr would fill the line)
        seconds = float(got) if isinstance(got, str) and len(got) <= 100 else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):  # (no number, or "inf", which no plan means)
        return " (e.g. 120 for 2 min)"
    if seconds < 0:  # (written as a number, it would be refused as negative)
        return ", 0 or more (e.g. 120 for 2 min)"
    if seconds.is_integer() and abs(seconds) < 1e15:
        number = str(int(seconds))
    else:  # (as YAML writes a float: "0.25", "1.0e-07", read back as a number)
        number = yaml.safe_dump(seconds).splitlines()[0]
    with contextlib.suppress(yaml.YAMLError):
        if isinstance(yaml.safe_load(got), int | float):
            return (
                f", written as a number: write {number}, without quotes (in quotes YAML reads "
                "it as text)"
            )
    # (YAML 1.1 reads an exponent as a number only with a dot and a sign: 1.5e+3)
    why = ", an exponent without both a dot and a sign," if "e" in got.lower() else ""
    return f", written as a number: write {number} (YAML reads {got!r}{why} as text)"


def _likeliest_branches(errors: list[Any], start: int, models: set[str], data: Any) -> list[Any]:
    """Keep, of a field that may take one of several models, the errors of the one meant.

    pydantic reports every member of a union: a ``time_plan`` with ``loops:
    three`` also lacks ``phases`` (MultiPhaseTimePlan) and ``duration``
    (TIntervalDuration). A member is named in an error's path (from index
    ``start`` on) by a part that is a pydantic model's name (``models``), is
    not a key the user wrote there (``data``), nor the unknown key of an
    ``extra_forbidden`` error; a union has at least two members failing at one
    path. Its members' own unions are settled first; then the member meant is
    the one missing the fewest of its own fields, then with the fewest errors.
    Its errors are kept (all tied members'), without the member's name.
    """
    groups: dict[tuple[Any, ...], dict[str, list[Any]]] = {}
    kept: list[Any] = []
    for e in errors:
        loc = tuple(e["loc"])
        at = next((i for i in range(start, len(loc)) if _names_member(e, loc, i, models, data)),
                  None)  # fmt: skip
        if at is None:
            kept.append(e)
        else:
            groups.setdefault(loc[:at], {}).setdefault(loc[at], []).append(e)
    for prefix, branches in groups.items():
        n = len(prefix)
        if len(branches) < 2:  # (not a union's members: look past it)
            kept += _likeliest_branches(next(iter(branches.values())), n + 1, models, data)
            continue
        settled = [
            _likeliest_branches(
                [{**e, "loc": prefix + tuple(e["loc"])[n + 1 :]} for e in errs], n, models, data
            )
            for errs in branches.values()
        ]
        scores = [_score(errs, n) for errs in settled]
        kept += [e for errs, sc in zip(settled, scores, strict=True) if sc == min(scores)
                 for e in errs]  # fmt: skip
    return kept


def _score(errors: list[Any], n: int) -> tuple[int, int]:
    """Rank a member (path of ``n`` parts): its own fields missing, then its errors."""
    return sum(e["type"] == "missing" and len(e["loc"]) == n + 1 for e in errors), len(errors)


def _with_index(loc: tuple[Any, ...], e: Any, data: Any) -> tuple[Any, ...]:
    """Put back the list index a validator left out of a path (useq: ``channels.exposure``).

    Only where the user's data at ``loc[0]`` is a list with exactly one item whose
    ``loc[1]`` holds the value the error is about.
    """
    if len(loc) != 2 or not isinstance(data, dict) or not isinstance(loc[1], str):
        return loc
    items = data.get(loc[0])
    if not isinstance(items, list):
        return loc
    hits = [
        i
        for i, it in enumerate(items)
        if isinstance(it, dict) and loc[1] in it and it[loc[1]] == e.get("input")
    ]
    return (loc[0], hits[0], loc[1]) if len(hits) == 1 else loc


def _names_member(e: Any, loc: tuple[Any, ...], i: int, models: set[str], data: Any) -> bool:
    """Return whether ``loc[i]`` names a union's member, not a key (see `_likeliest_branches`)."""
    part = loc[i]
    if not isinstance(part, str) or part not in models:
        return False
    if e["type"] == "extra_forbidden" and i == len(loc) - 1:
        return False  # (the unknown key the user wrote)
    here = data
    for p in loc[:i]:  # the user's data at that path (members' names are no keys: skipped)
        keyed = isinstance(here, dict) and p in here
        if keyed or (isinstance(here, list) and isinstance(p, int) and 0 <= p < len(here)):
            here = here[p]
    return not (isinstance(here, dict) and part in here)


def _model_names() -> set[str]:
    """Return the class names of every pydantic model defined so far (useq's, ours...)."""
    seen: set[type] = set()
    todo: list[type] = [BaseModel]
    while todo:
        subs: list[type] = todo.pop().__subclasses__()
        for sub in subs:
            if sub not in seen:  # (by class: two modules may each have a FrozenModel)
                seen.add(sub)
                todo.append(sub)
    return {cls.__name__ for cls in seen}


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Parse bytes that must hold one JSON object (wire messages; never pickles).

    Raises
    ------
    ValueError
        saying what ``what`` is and why it is not a JSON object.

    """
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses a key given twice in one mapping.

    Plain YAML keeps the last silently: two ``guardrails:`` blocks in a profile
    would drop the first without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *anchor' merges; a key given beside it overrides, as YAML says
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # an unhashable key: the base loader reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line "
                    f"{seen[key].start_mark.line + 1})", key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        r"""Return a string, its escaped UTF-16 pairs (``"\ud83d\ude00"``) joined."""
        # YAML and JSON write a character past U+FFFF escaped as two halves (Python's
        # json.dumps does, by default); the base loader keeps the halves, which no file
        # name can hold nor UTF-8 encode. A lone half is left (named where used).
        text = str(super().construct_yaml_str(node))
        if any("\ud800" <= c <= "\udfff" for c in text):  # (each pair joined; lone halves stay)
            return _SURROGATE_PAIR.sub(_joined_pair, text)
        return text


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:str", _UniqueKeyLoader.construct_yaml_str)

_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _joined_pair(m: re.Match[str]) -> str:
    high, low = (ord(c) for c in m.group())
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


BACKSLASH_HINT = (
    "in double quotes YAML reads a backslash as the start of an escape (\\n, \\t, \\b ...): "
    "write a Windows path with / (C:/Micro-Manager/rig.cfg) or in single quotes "
    "('C:\\Micro-Manager\\rig.cfg')"
)
"""What to do about a Windows path a YAML file wrote in double quotes."""


def read_yaml(path: str | Path, error: type[ConfigError] = ConfigError) -> Any:
    """Read a YAML file, raising ``error`` with the line and column of a syntax error.

    A key given twice in one mapping is an error too (YAML would keep the last).
    """
    p = Path(path)
    if p.is_dir():
        raise error(str(p), ["is a folder, not a YAML file"])
    if not p.is_file():
        raise error(str(p), [f"file not found (looked for {p.resolve()})"])
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise error(str(p), [f"cannot read file: {exc}"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(str(p), [_not_utf8(raw, exc)]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        if "escape character" in problem:  # (a Windows path: "C:\Program Files\Micro-Manager")
            problem += f"; {BACKSLASH_HINT}"
        raise error(str(p), [f"{where}YAML syntax error: {problem}"]) from exc


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    """Say why a YAML file's bytes are not UTF-8 text, and what to do."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "saved as UTF-16 ('Unicode' in Notepad): save it as UTF-8"
    if b"\x00" in raw[:4096] or raw[:4] in (b"\x89PNG", b"II*\x00", b"MM\x00*"):
        return "not a text file (an image or other binary file?): give the YAML file"
    line = raw[: exc.start].count(b"\n") + 1
    return (
        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}; e.g. saved as 'ANSI' "
        "in Notepad): save it as UTF-8"
    )


def top_level_problem(data: Any) -> str:
    """Say what is wrong with a YAML file whose top level is not a mapping (``key: value``)."""
    if data is None:
        return "the file is empty (or holds only comments): nothing to read"
    return f"(top level): expected a mapping of key: value lines, got a {type(data).__name__}"


class FrozenModel(BaseModel):
    """Immutable model that forbids unknown fields.

    Use `from_file` to load one from YAML and `replace` to derive a changed copy
    (the copy is validated again).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    error_type: ClassVar[type[ConfigError]] = ConfigError

    @classmethod
    def from_file(cls: type[_M], path: str | Path) -> _M:
        """Load and validate a YAML file.

        Raises
        ------
        ConfigError
            (or the subclass named by ``error_type``) listing every problem with
            its field path; the file is never partly applied.

        """
        err_cls = cls.error_type
        data = read_yaml(path, err_cls)
        if not isinstance(data, dict):
            raise err_cls(str(path), [top_level_problem(data)])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise err_cls(str(path), format_validation_error(exc, data)) from None

    def replace(self: _M, **changes: Any) -> _M:
        """Return a copy with ``changes`` applied, validated again."""
        data = self.model_dump()
        data.update(changes)
        return type(self).model_validate(data)
