"""Verified disk cache of built city networks.

An entry ``$RELIED_CACHE_DIR/networks/<name>-<sha16>-v<BUILD_VERSION>.npz`` holds every array
field of :class:`CityNetwork` (found with ``dataclasses.fields``) and three integrity keys:

* ``__source_sha256__``: SHA-256 of the OSM/GraphML file the network was built from,
* ``__schema__``: :data:`relied.env.network.BUILD_VERSION` of the build,
* ``__content_sha256__``: SHA-256 over every field's name, dtype, shape and bytes.

:func:`load_network` checks all three, then the structure (finite floats, node and edge
indices in range, CSR ``indptr`` consistent with ``edge_src``); any failure raises
:class:`CacheEntryError` with the reason, and the caller rebuilds from the source file. Entries
are written to a unique temporary file in the cache folder and renamed, so concurrent builds
never see half a file; a cache folder that cannot be written turns caching off with one warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from relied.env.network import BUILD_VERSION, CityNetwork

META_KEYS = ("__source_sha256__", "__schema__", "__content_sha256__")
_warned: set[str] = set()
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temp_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """``mkstemp`` in ``folder`` (a unique name: concurrent writers never collide) with the
    usual ``0o666 & ~umask`` mode instead of mkstemp's 0o600, so renamed files look like
    ordinary ones."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~_UMASK)
    return fd, Path(name)


def atomic_write_bytes(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a unique temporary file and a rename; ``False`` (and
    one warning) when the folder cannot be written. For cache entries of any kind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path.parent, f".{path.name}.", ".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        warn_unwritable(path.parent, exc)
        return False


class CacheEntryError(ValueError):
    """A cache entry that cannot be trusted; the message says why (one line)."""


def cache_root() -> Path:
    """``$RELIED_CACHE_DIR`` when set and not blank, else ``$XDG_CACHE_HOME/relied`` or
    ``~/.cache/relied``; always absolute."""
    env = os.environ.get("RELIED_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache").absolute() / "relied"


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def warn_unwritable(folder: Path, exc: OSError) -> None:
    """Warn once per folder that the cache cannot be written and runs continue without it."""
    if str(folder) not in _warned:
        _warned.add(str(folder))
        warn(f"cache folder '{folder}' is not writable ({type(exc).__name__}); continuing "
             "without caching (set RELIED_CACHE_DIR to a writable folder)")


def source_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry_path(name: str, source_digest: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "city"
    return cache_root() / "networks" / f"{safe}-{source_digest[:16]}-v{BUILD_VERSION}.npz"


def _arrays(net: CityNetwork) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(net, f.name)) for f in fields(CityNetwork)}


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_network(net: CityNetwork, path: Path, source_digest: str) -> bool:
    """Write ``net`` with its integrity keys atomically; ``False`` (and one warning) when the
    cache folder cannot be written."""
    arrays = _arrays(net)
    meta = {"__source_sha256__": np.array(source_digest), "__schema__": np.array(BUILD_VERSION),
            "__content_sha256__": np.array(content_sha256(arrays))}
    buf = io.BytesIO()
    np.savez(buf, **arrays, **meta)
    return atomic_write_bytes(path, buf.getvalue())


def load_network(path: Path, source_digest: str) -> CityNetwork:
    """The network of a verified entry; ``FileNotFoundError`` if absent, else
    :class:`CacheEntryError` naming what is wrong."""
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - np.load raises EOFError, zipfile, zlib, ... errors
        raise CacheEntryError(f"unreadable ({type(exc).__name__})") from None
    missing = [k for k in (*META_KEYS, *(f.name for f in fields(CityNetwork))) if k not in stored]
    if missing:
        raise CacheEntryError(f"no '{missing[0]}' (written by another relied version?)")
    if stored["__schema__"].shape != () or int(stored["__schema__"]) != BUILD_VERSION:
        raise CacheEntryError(f"schema {stored['__schema__']} != {BUILD_VERSION}")
    if str(stored["__source_sha256__"]) != source_digest:
        raise CacheEntryError("built from another source file")
    arrays = {f.name: stored[f.name] for f in fields(CityNetwork)}
    if str(stored["__content_sha256__"]) != content_sha256(arrays):
        raise CacheEntryError("contents do not match their checksum")
    kw = dict(arrays)
    kw["name"] = str(kw["name"])
    try:
        net = CityNetwork(**kw)
        check_network(net)
    except (ValueError, TypeError, IndexError) as exc:
        raise CacheEntryError(str(exc).removeprefix(f"network '{kw['name']}': ")) from None
    return net


def check_network(net: CityNetwork) -> None:
    """``ValueError`` naming the first field that breaks the network's invariants: finite
    floats, CSR ``indptr`` over ``n_edges`` consistent with ``edge_src``, node indices
    within ``0..n_nodes-1``, one entry per node or edge."""
    for f in fields(CityNetwork):
        a = np.asarray(getattr(net, f.name))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"field '{f.name}' has non-finite values")
    n, m = net.n_nodes, net.n_edges
    indptr = np.asarray(net.indptr)
    if indptr.shape != (n + 1,) or indptr.dtype.kind not in "iu" or indptr[0] != 0 \
            or indptr[-1] != m or (np.diff(indptr) < 0).any():
        raise ValueError("field 'indptr' is not a CSR index over the edges")
    for name in ("edge_src", "edge_dst"):
        a = np.asarray(getattr(net, name))
        if a.shape != (m,) or a.dtype.kind not in "iu" or (m and (a.min() < 0 or a.max() >= n)):
            raise ValueError(f"field '{name}' has node indices outside 0..{n - 1}")
    if not np.array_equal(net.edge_src, np.repeat(np.arange(n), np.diff(indptr))):
        raise ValueError("field 'edge_src' does not match 'indptr'")
    for f in fields(CityNetwork):
        a = np.asarray(getattr(net, f.name))
        if a.ndim and a.shape[0] not in (n, n + 1, m):
            raise ValueError(f"field '{f.name}' has {a.shape[0]} entries for {n} nodes and "
                             f"{m} edges")
