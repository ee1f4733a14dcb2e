"""City loading: shipped OSM extracts, user files, or online place queries, with a disk cache.

``load_city(spec)`` accepts

* a shipped name (``west-oakland``, ``aguascalientes``, ``monaco``, ``north-bayreuth``),
* a path to ``.osm`` / ``.osm.xml`` / ``.osm.bz2`` / ``.osm.gz`` / ``.graphml``,
* ``place:<query>`` (e.g. ``place:Piedmont, California, USA``): downloaded with osmnx when a
  network is available, then cached on disk.

Built networks are cached as ``.npz`` under ``$RELIED_CACHE_DIR`` (default
``~/.cache/relied``), keyed by the input file's hash and verified on load
(:mod:`relied.env.netcache`); an unusable entry is rebuilt with one warning, and an unwritable
cache folder only turns caching off. Shipped data: (c) OpenStreetMap contributors, ODbL 1.0.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from relied.env import netcache
from relied.env.network import CityNetwork, build_network

OSM_SUFFIXES = (".osm", ".osm.xml", ".xml", ".osm.bz2", ".osm.gz", ".graphml")


@dataclass(frozen=True)
class ShippedCity:
    name: str
    filename: str
    description: str


SHIPPED_CITIES: dict[str, ShippedCity] = {
    c.name: c
    for c in (
        ShippedCity("west-oakland", "west-oakland.osm.bz2",
                    "West Oakland, California, USA: a few blocks (unit tests)"),
        ShippedCity("aguascalientes", "aguascalientes.osm.bz2",
                    "Aguascalientes centre-east, Mexico: dense urban grid"),
        ShippedCity("monaco", "monaco.osm.gz", "The whole of Monaco (OSM 2012-07)"),
        ShippedCity("north-bayreuth", "north-bayreuth.osm.gz",
                    "Northern Bayreuth, Germany: town and rural roads"),
    )
}


class CityError(ValueError):
    """A city spec that cannot be turned into a network; the message says what to do."""


@dataclass(frozen=True)
class CitySource:
    """Where a city spec's network comes from: ``spec`` in canonical form (a shipped name,
    ``place:<query>`` or an absolute file path) and its source file (``None`` for a place not
    downloaded yet)."""

    spec: str
    path: Path | None

    def sha256(self) -> str | None:
        return netcache.source_sha256(self.path) if self.path and self.path.is_file() else None


def cache_dir() -> Path:
    return netcache.cache_root()


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("relied.env") / "data" / SHIPPED_CITIES[name].filename))


@contextmanager
def _signal_tags():
    """osmnx keeps the node tags that mark traffic signals (``crossing`` is not among its
    defaults): :mod:`relied.env.signals` reads them."""
    import osmnx as ox

    kept = ox.settings.useful_tags_node
    ox.settings.useful_tags_node = list(dict.fromkeys([*kept, "highway", "crossing"]))
    try:
        yield
    finally:
        ox.settings.useful_tags_node = kept


def _read_graph(path: Path):
    import osmnx as ox

    if path.name.endswith(".graphml"):
        return ox.load_graphml(path)
    with _signal_tags():
        return ox.graph_from_xml(path, simplify=False, retain_all=True)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CityError(f"city file '{path}' does not exist; check the path or use a shipped "
                        f"name ({', '.join(SHIPPED_CITIES)})")
    if not path.is_file() or path.stat().st_size == 0:
        raise CityError(f"city file '{path}' is empty or not a file; re-export the OSM extract")
    if not path.name.lower().endswith(OSM_SUFFIXES):
        raise CityError(f"city file '{path}' is not OSM XML or GraphML (expected one of "
                        f"{', '.join(OSM_SUFFIXES)})")


def _build(path: Path, name: str) -> CityNetwork:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"osmnx\.")
            graph = _read_graph(path)
    except Exception as exc:  # osmnx/ElementTree/bz2/gzip raise many types on bad input
        raise CityError(f"city file '{path}' could not be parsed as OSM data "
                        f"({type(exc).__name__}: {str(exc)[:120]}); re-export it") from exc
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"osmnx\.")
            return build_network(graph, name)
    except ValueError as exc:
        raise CityError(f"{exc} (file '{path}')") from exc


def _load_file(path: Path, name: str, use_cache: bool) -> CityNetwork:
    _check_file(path)
    try:
        digest = netcache.source_sha256(path)
    except OSError as exc:
        raise CityError(f"city file '{path}' cannot be read ({type(exc).__name__}); check its "
                        "permissions") from None
    entry = netcache.entry_path(name, digest)
    if use_cache:
        try:
            return netcache.load_network(entry, digest)
        except FileNotFoundError:
            pass
        except (netcache.CacheEntryError, OSError) as exc:
            netcache.warn(f"cached network '{entry}' is unusable ({exc}); rebuilding it from "
                          f"'{path}'")
    net = _build(path, name)
    if use_cache:
        netcache.save_network(net, entry, digest)
    return net


def _load_place(query: str, use_cache: bool) -> CityNetwork:
    import osmnx as ox

    slug = _place_slug(query)
    graphml = cache_dir() / "places" / f"{slug}.graphml"
    if use_cache and graphml.is_file():
        try:
            return _load_file(graphml, slug, use_cache)
        except CityError as exc:
            netcache.warn(f"cached download '{graphml}' is unusable ({exc}); downloading again")
    ox.settings.use_cache = use_cache
    ox.settings.cache_folder = str(cache_dir() / "osmnx-http")
    try:
        with _signal_tags():
            graph = ox.graph_from_place(query, network_type="drive", simplify=False)
    except Exception as exc:
        raise CityError(f"could not download place '{query}' from OpenStreetMap "
                        f"({type(exc).__name__}); without a network use a shipped city "
                        f"({', '.join(SHIPPED_CITIES)}) or an .osm file") from exc
    if use_cache:
        try:
            graphml.parent.mkdir(parents=True, exist_ok=True)
            ox.save_graphml(graph, graphml)
            return _load_file(graphml, slug, use_cache)
        except OSError as exc:
            netcache.warn_unwritable(graphml.parent, exc)
    try:
        return build_network(graph, slug)
    except ValueError as exc:
        raise CityError(f"{exc} (place '{query}')") from exc


def _place_slug(query: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in query.lower()).strip("-")[:80]


def city_source(spec: str | Path) -> CitySource:
    """The canonical spec and source file of a city spec (``CityError`` if unknown/missing)."""
    text = str(spec).strip()
    if text in SHIPPED_CITIES:
        return CitySource(text, shipped_path(text))
    if text.startswith("place:"):
        graphml = cache_dir() / "places" / f"{_place_slug(text[len('place:'):].strip())}.graphml"
        return CitySource(text, graphml if graphml.is_file() else None)
    path = _file_spec(text)
    _check_file(path)
    return CitySource(str(path.absolute()), path.absolute())


def _file_spec(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() or path.name.lower().endswith(OSM_SUFFIXES) or os.sep in text:
        return path
    raise CityError(f"unknown city '{text}': shipped cities are {', '.join(SHIPPED_CITIES)}; "
                    "or pass an .osm/.osm.bz2/.osm.gz/.graphml path, or 'place:<query>' online")


def load_city(spec: str | Path, use_cache: bool = True) -> CityNetwork:
    """Load a city network from a shipped name, a file path, or ``place:<query>``."""
    text = str(spec).strip()
    if text in SHIPPED_CITIES:
        return _load_file(shipped_path(text), text, use_cache)
    if text.startswith("place:"):
        return _load_place(text[len("place:"):].strip(), use_cache)
    path = _file_spec(text)
    return _load_file(path, path.name.split(".")[0] or "city", use_cache)
