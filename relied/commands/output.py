"""Terminal output shared by every verb: consoles, the ``--json`` flag, one-line errors, tables.

Reusable pieces for every command (docs/reliability.md):

* :func:`fail` -- one red line on stderr, ``{"error": ...}`` on stdout with ``--json``, exit 2
  (:func:`print_error` alone for an error that does not end the command);
* :func:`emit_json` -- strict JSON (NaN/inf -> ``null``, numpy -> Python) on one line;
* :func:`error_message` / :func:`validation_message` -- an exception, or a Pydantic
  ``ValidationError``, as one line ``field: value (reason)``, fields named by their flag;
* :func:`flag_message` -- the first problem of a ``ValidationError`` in option wording,
  ``--epsilon: -1.0 is invalid: must be > 0`` (or naming the file and field it came from);
* :func:`figure_path` -- where a ``--plot``/``--out`` figure is written (a folder gets a
  default file name; an unknown extension is refused naming the flag).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]

#: Extensions matplotlib writes without extra packages.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff",
                   ".webp")


def print_error(message: str) -> None:
    """Print ``error: message`` as one line on stderr (markup in ``message`` is shown as text)."""
    line = " ".join(str(message).split())
    err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def fail(message: str, as_json: bool = False) -> NoReturn:
    """Print a one-line error (:func:`print_error`) and exit with status 2; with ``as_json``
    also print ``{"error": message}`` on stdout."""
    if as_json:
        print(json.dumps({"error": " ".join(str(message).split())}), flush=True)
    print_error(message)
    raise typer.Exit(2)


def strict(value: object) -> object:
    """``value`` with NaN/inf floats as ``None``, numpy scalars/arrays and paths as plain
    Python, so that ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(value, Mapping):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [strict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return strict(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def emit_json(obj: object) -> None:
    """Print ``obj`` as one line of strict JSON (undefined figures are ``null``)."""
    print(json.dumps(strict(obj), allow_nan=False), flush=True)


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) \
        else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Pydantic's bound errors: the operator and the ``ctx`` key holding the bound.
_RANGES = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
           "less_than": ("<", "lt"), "less_than_equal": ("<=", "le")}


def _field(error: ErrorDetails, flags: Mapping[str, str]) -> str:
    """``--flag (field)`` for a field a flag sets, else the field's dotted path ('' for none)."""
    loc = ".".join(str(p) for p in error["loc"])
    top = str(error["loc"][0]) if error["loc"] else ""
    return f"{flags[top]} ({loc})" if top in flags else loc


def _reason(error: ErrorDetails, ranges: bool = False) -> str:
    """Why a value was refused; ``ranges`` words bounds as ``must be > 0``."""
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "json_invalid":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if ranges and error["type"] in _RANGES:
        op, key = _RANGES[error["type"]]
        bound = error.get("ctx", {}).get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "must be > 0", not "> 0.0"
        return f"must be {op} {bound}"
    if ranges and error["type"] == "finite_number":
        return "must be a finite number"
    reason = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return reason.replace("Input should be", "must be")


def validation_message(exc: ValidationError, flags: Mapping[str, str] | None = None,
                       limit: int = 3) -> str:
    """One line for a Pydantic error: ``invalid <Model>: field: value (reason); ...``.

    ``flags`` maps field names to the CLI flags that set them (``{"horizon_s": "--horizon"}``),
    shown as ``--horizon (horizon_s)``. At most ``limit`` errors are listed."""
    parts = []
    for e in exc.errors(include_url=False):
        field, reason = _field(e, flags or {}), _reason(e)
        if e["type"] == "json_invalid":
            parts.append(f"invalid JSON ({reason})")
        elif not field:
            parts.append(reason)
        elif e["type"] == "missing":
            parts.append(f"{field}: missing")
        else:
            parts.append(f"{field}: {_shown(e.get('input'))} ({reason})")
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return f"invalid {exc.title}: " + "; ".join(parts[:limit]) + more


def flag_message(exc: ValidationError, flags: Mapping[str, str] | None = None,
                 source: str | None = None) -> str:
    """The first problem of a Pydantic error in the wording of a bad option value:
    ``--epsilon: -1.0 is invalid: must be > 0`` (a field no flag in ``flags`` sets is named
    ``'field'``); with ``source`` (e.g. ``"--scenario sc.json"``) the value came from that
    file: ``--scenario sc.json: field 'n_agents': 0 is invalid: must be >= 1``."""
    e = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in e["loc"])
    top = str(e["loc"][0]) if e["loc"] else ""
    reason = _reason(e, ranges=True)
    if e["type"] == "json_invalid":
        return f"{source + ': ' if source else ''}invalid JSON ({reason})"
    if not loc:
        return f"{source}: {reason}" if source else reason
    where = f"{source}: field '{loc}'" if source else (flags or {}).get(top, f"'{loc}'")
    if e["type"] == "missing":
        return f"{where}: missing"
    return f"{where}: {_shown(e.get('input'))} is invalid: {reason}"


def error_message(exc: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """The one-line message of a user error."""
    if isinstance(exc, ValidationError):
        return validation_message(exc, flags)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def figure_path(path: Path, flag: str, default_name: str) -> Path:
    """The file a figure option writes: ``path/default_name`` for an existing folder, else
    ``path``; :class:`ValueError` naming ``flag`` when its extension is not an image format
    matplotlib writes or its folder does not exist."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"{flag} '{path}': unknown figure format '{path.suffix or '(none)'}'; "
                         f"use one of {', '.join(FIGURE_SUFFIXES[:4])} or an existing folder")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} '{path}': folder '{path.parent}' does not exist")
    return path


def metric_table(title: str, rows: dict[str, object], head: str = "metric") -> Table:
    """A two-column table of named values; floats are shown with three decimals, undefined
    ones as ``n/a``."""
    table = Table(title=title)
    table.add_column(head)
    table.add_column("value", justify="right")
    for key, value in rows.items():
        if isinstance(value, float) and not math.isfinite(value):
            shown = "n/a"
        else:
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    return table
