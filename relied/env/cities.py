"""City loading: shipped OSM extracts, user files, or online place queries, with a disk cache.

``load_city(spec)`` accepts

* a shipped name (``west-oakland``, ``aguascalientes``, ``monaco``, ``north-bayreuth``),
* a path to ``.osm`` / ``.osm.xml`` / ``.osm.bz2`` / ``.osm.gz`` / ``.graphml``,
* ``place:<query>`` (e.g. ``place:Piedmont, California, USA``): downloaded with osmnx when a
  network is available, then cached on disk.

Built networks are cached as ``.npz`` under ``$RELIED_CACHE_DIR`` (default
``~/.cache/relied``), keyed by the input file's hash, so a second load is fast.
Shipped data: (c) OpenStreetMap contributors, ODbL 1.0.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from relied.env.network import BUILD_VERSION, CityNetwork, build_network, file_digest

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


def cache_dir() -> Path:
    return Path(os.environ.get("RELIED_CACHE_DIR", Path.home() / ".cache" / "relied"))


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("relied.env") / "data" / SHIPPED_CITIES[name].filename))


def _read_graph(path: Path):
    import osmnx as ox

    if path.name.endswith(".graphml"):
        return ox.load_graphml(path)
    return ox.graph_from_xml(path, simplify=False, retain_all=True)


def _load_file(path: Path, name: str, use_cache: bool) -> CityNetwork:
    if not path.exists():
        raise CityError(f"city file '{path}' does not exist; check the path or use a shipped "
                        f"name ({', '.join(SHIPPED_CITIES)})")
    if path.stat().st_size == 0:
        raise CityError(f"city file '{path}' is empty; re-export the OSM extract")
    if not path.name.lower().endswith(OSM_SUFFIXES):
        raise CityError(f"city file '{path}' is not OSM XML or GraphML (expected one of "
                        f"{', '.join(OSM_SUFFIXES)})")
    cached = cache_dir() / "networks" / f"{name}-{file_digest(path)}-v{BUILD_VERSION}.npz"
    if use_cache and cached.exists():
        try:
            return CityNetwork.load(cached)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            cached.unlink(missing_ok=True)  # a corrupt cache is rebuilt from the source file
    try:
        graph = _read_graph(path)
    except Exception as exc:  # osmnx/ElementTree/bz2/gzip raise many types on bad input
        raise CityError(f"city file '{path}' could not be parsed as OSM data "
                        f"({type(exc).__name__}: {str(exc)[:120]}); re-export it") from exc
    try:
        net = build_network(graph, name)
    except ValueError as exc:
        raise CityError(f"{exc} (file '{path}')") from exc
    if use_cache:
        net.save(cached)
    return net


def _load_place(query: str, use_cache: bool) -> CityNetwork:
    import osmnx as ox

    slug = "".join(c if c.isalnum() else "-" for c in query.lower()).strip("-")[:80]
    graphml = cache_dir() / "places" / f"{slug}.graphml"
    if not (use_cache and graphml.exists()):
        ox.settings.use_cache = True
        ox.settings.cache_folder = str(cache_dir() / "osmnx-http")
        try:
            graph = ox.graph_from_place(query, network_type="drive", simplify=False)
        except Exception as exc:
            raise CityError(f"could not download place '{query}' from OpenStreetMap "
                            f"({type(exc).__name__}); without a network use a shipped city "
                            f"({', '.join(SHIPPED_CITIES)}) or an .osm file") from exc
        graphml.parent.mkdir(parents=True, exist_ok=True)
        ox.save_graphml(graph, graphml)
    return _load_file(graphml, slug, use_cache)


def load_city(spec: str | Path, use_cache: bool = True) -> CityNetwork:
    """Load a city network from a shipped name, a file path, or ``place:<query>``."""
    text = str(spec).strip()
    if text in SHIPPED_CITIES:
        return _load_file(shipped_path(text), text, use_cache)
    if text.startswith("place:"):
        return _load_place(text[len("place:"):].strip(), use_cache)
    path = Path(text).expanduser()
    if path.exists() or path.name.lower().endswith(OSM_SUFFIXES) or os.sep in text:
        name = path.name.split(".")[0] or "city"
        return _load_file(path, name, use_cache)
    raise CityError(f"unknown city '{text}': shipped cities are {', '.join(SHIPPED_CITIES)}; "
                    "or pass an .osm/.osm.bz2/.osm.gz/.graphml path, or 'place:<query>' online")
