import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from relied.env import cities
from relied.env.cities import SHIPPED_CITIES, CityError, load_city
from relied.env.network import DRIVABLE_HIGHWAYS, CityNetwork, _lanes

# drive SCC, simplified node counts measured independently in shared/data/osm/README.md
EXPECTED_NODES = {"west-oakland": 22, "aguascalientes": 672, "monaco": 310, "north-bayreuth": 623}

FOOTWAY_ONLY = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6">
  <node id="1" lat="37.80" lon="-122.30"/><node id="2" lat="37.801" lon="-122.30"/>
  <node id="3" lat="37.802" lon="-122.30"/>
  <way id="10"><nd ref="1"/><nd ref="2"/><nd ref="3"/><tag k="highway" v="footway"/></way>
</osm>
"""


@pytest.mark.parametrize("name", list(SHIPPED_CITIES))
def test_shipped_city_is_a_strongly_connected_drive_network(name):
    net = load_city(name)
    assert net.n_nodes == EXPECTED_NODES[name]
    n_comp, _ = connected_components(net.sparse(), directed=True, connection="strong")
    assert n_comp == 1
    assert set(net.highway.tolist()) <= DRIVABLE_HIGHWAYS
    assert np.all(np.diff(net.indptr) >= 1)  # every node can be left
    assert np.all(net.edge_src[:-1] <= net.edge_src[1:])  # CSR order
    assert np.all(net.freeflow_s > 0) and np.all(net.capacity >= 1)
    assert net.max_out_degree == 4


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELIED_CACHE_DIR", str(tmp_path))
    first = load_city("west-oakland")
    cached = list((tmp_path / "networks").glob("west-oakland-*.npz"))
    assert len(cached) == 1
    monkeypatch.setattr(cities, "_read_graph", lambda p: pytest.fail("re-parsed the OSM file"))
    second = load_city("west-oakland")
    np.testing.assert_array_equal(first.edge_dst, second.edge_dst)
    np.testing.assert_allclose(first.freeflow_s, second.freeflow_s)
    assert second.street.tolist() == first.street.tolist()


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("RELIED_CACHE_DIR", str(tmp_path))
    net = load_city("west-oakland")
    (cached,) = (tmp_path / "networks").glob("*.npz")
    cached.write_bytes(b"garbage")
    again = load_city("west-oakland")
    assert again.n_edges == net.n_edges
    assert CityNetwork.load(cached).n_edges == net.n_edges


def test_osm_and_graphml_paths_load(tmp_path):
    import osmnx as ox

    src = cities.shipped_path("west-oakland")
    net = load_city(src)
    assert net.n_nodes == 22
    graph = ox.graph_from_xml(src, simplify=False, retain_all=True)
    ox.save_graphml(graph, tmp_path / "oak.graphml")
    assert load_city(tmp_path / "oak.graphml").n_edges == net.n_edges


@pytest.mark.parametrize(
    ("content", "suffix", "needle"),
    [
        (b"this is not xml at all", ".osm", "could not be parsed"),
        (b"", ".osm", "is empty"),
        (FOOTWAY_ONLY.encode(), ".osm", "no drivable roads"),
        (b"<osm/>", ".txt", "not OSM XML"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, content, suffix, needle):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(CityError, match=needle) as info:
        load_city(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_name_and_missing_file():
    with pytest.raises(CityError, match="unknown city 'atlantis'.*west-oakland"):
        load_city("atlantis")
    with pytest.raises(CityError, match="does not exist"):
        load_city("/nonexistent/city.osm")


def test_place_query_offline_says_what_to_do(tmp_path, monkeypatch):
    import osmnx as ox

    monkeypatch.setenv("RELIED_CACHE_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(ox, "graph_from_place", offline)
    with pytest.raises(CityError, match="could not download place 'Piedmont, CA'.*shipped city"):
        load_city("place:Piedmont, CA")


def test_place_query_is_cached_as_graphml(tmp_path, monkeypatch):
    import osmnx as ox

    monkeypatch.setenv("RELIED_CACHE_DIR", str(tmp_path))
    raw = ox.graph_from_xml(cities.shipped_path("west-oakland"), simplify=False, retain_all=True)
    calls = []
    monkeypatch.setattr(ox, "graph_from_place", lambda q, **kw: calls.append(q) or raw)
    first = load_city("place:West Oakland")
    second = load_city("place:West Oakland")
    assert calls == ["West Oakland"]
    assert first.n_nodes == second.n_nodes == 22


def test_lanes_tag_parsing_and_defaults():
    assert _lanes("3", "primary") == 3.0
    assert _lanes(["2", "4"], "secondary") == 4.0
    assert _lanes("two", "primary") == 2.0  # default for primary
    assert _lanes(None, "residential") == 1.0


def test_network_build_does_not_depend_on_the_process_hash_seed(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import hashlib; from relied.env.cities import load_city; n = load_city('monaco', "
            "use_cache=False); print(hashlib.sha256(b''.join(getattr(n, k).tobytes() for k in "
            "('edge_dst', 'freeflow_s', 'capacity', 'highway', 'street'))).hexdigest())")
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in (1, 2, 3)
    }
    assert len(digests) == 1
