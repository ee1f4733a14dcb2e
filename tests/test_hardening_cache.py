"""The network cache is verified and never breaks a city (issue 10, items 2, 3, 5, 12)."""

import io
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from relied.env import cities, netcache
from relied.env.cities import load_city, shipped_path
from relied.env.network import BUILD_VERSION


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELIED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def entry(cache):
    (path,) = (cache / "networks").glob("west-oakland-*.npz")
    return path


def rewrite(path, change, fix_checksum):
    """Rewrite a cache entry with ``change(arrays)`` applied; ``fix_checksum`` recomputes the
    content checksum (a hand-made, adversarial entry)."""
    with np.load(path) as data:
        arrays = {k: data[k].copy() for k in data.files}
    change(arrays)
    if fix_checksum:
        fields = {k: v for k, v in arrays.items() if not k.startswith("__")}
        arrays["__content_sha256__"] = np.array(netcache.content_sha256(fields))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def load_twice_and_check(capsys, reason):
    """Loading rebuilds with exactly one warning line naming ``reason``; the rebuilt entry is
    then used silently."""
    reference = load_city("west-oakland", use_cache=False)
    net = load_city("west-oakland")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "cached network" in err and "rebuilding" in err and re.search(reason, err), err
    assert net.n_nodes == reference.n_nodes and np.array_equal(net.indptr, reference.indptr)
    load_city("west-oakland")
    assert capsys.readouterr().err == ""


def test_zero_byte_entry_is_rebuilt(cache, capsys):
    load_city("west-oakland")
    entry(cache).write_bytes(b"")
    load_twice_and_check(capsys, r"unreadable \(EOFError\)")


@pytest.mark.parametrize("junk", [b"PK\x03\x04broken", os.urandom(300)])
def test_garbage_entry_is_rebuilt(cache, capsys, junk):
    load_city("west-oakland")
    entry(cache).write_bytes(junk)
    load_twice_and_check(capsys, "unreadable")


def test_another_citys_entry_under_this_name_is_rebuilt(cache, capsys):
    load_city("west-oakland")
    load_city("monaco")
    (monaco,) = (cache / "networks").glob("monaco-*.npz")
    shutil.copy(monaco, entry(cache))
    load_twice_and_check(capsys, "built from another source file")


def test_entry_of_another_schema_is_rebuilt(cache, capsys):
    load_city("west-oakland")
    rewrite(entry(cache), lambda a: a.update(__schema__=np.array(BUILD_VERSION - 1)), False)
    load_twice_and_check(capsys, f"schema {BUILD_VERSION - 1} != {BUILD_VERSION}")


def test_entry_without_integrity_keys_is_rebuilt(cache, capsys):
    net = load_city("west-oakland")
    net.save(entry(cache))  # the plain format of CityNetwork.save
    load_twice_and_check(capsys, "no '__source_sha256__'")


def nan_length(a):
    a["length_m"][3] = np.nan


def edge_out_of_range(a):
    a["edge_dst"][0] = 10_000


def broken_indptr(a):
    a["indptr"][2], a["indptr"][3] = a["indptr"][3], a["indptr"][2]


@pytest.mark.parametrize("change, fixed, reason", [
    (nan_length, False, "do not match their checksum"),
    (nan_length, True, "field 'length_m' has non-finite values"),
    (edge_out_of_range, True, "edge_dst'? (has|holds) node indices outside"),
    (broken_indptr, True, "indptr"),
    (lambda a: a.update(lanes=a["lanes"][:-1]), True, "field 'lanes' has"),
])
def test_tampered_entry_is_rebuilt(cache, capsys, change, fixed, reason):
    load_city("west-oakland")
    rewrite(entry(cache), change, fixed)
    load_twice_and_check(capsys, reason)


def test_unwritable_cache_only_turns_caching_off(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("RELIED_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(netcache, "_warned", set())
    net = load_city("west-oakland")
    assert net.n_nodes == 22
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is not writable" in err
    load_city("west-oakland")
    assert capsys.readouterr().err == ""  # warned once per folder


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_folder(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setenv("RELIED_CACHE_DIR", str(ro))
    monkeypatch.setattr(netcache, "_warned", set())
    try:
        assert load_city("west-oakland").n_nodes == 22
        assert "is not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_read_only_entry_is_still_used(cache, monkeypatch):
    load_city("west-oakland")
    monkeypatch.setattr(netcache, "save_network", lambda *a: pytest.fail("wrote the cache"))
    monkeypatch.setattr(cities, "_read_graph", lambda p: pytest.fail("re-parsed the OSM file"))
    assert load_city("west-oakland").n_nodes == 22


def test_blank_cache_variable_means_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RELIED_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert netcache.cache_root() == tmp_path / "xdg" / "relied"
    load_city("west-oakland")
    assert not (tmp_path / "networks").exists()
    assert list((tmp_path / "xdg" / "relied" / "networks").glob("west-oakland-*.npz"))
    monkeypatch.setenv("RELIED_CACHE_DIR", "relative/dir")
    assert netcache.cache_root() == tmp_path / "relative" / "dir"


def test_entry_key_uses_the_source_file_and_schema(cache):
    load_city("west-oakland")
    digest = netcache.source_sha256(shipped_path("west-oakland"))
    assert entry(cache).name == f"west-oakland-{digest[:16]}-v{BUILD_VERSION}.npz"
    with np.load(entry(cache)) as data:
        assert str(data["__source_sha256__"]) == digest


def test_build_leaks_no_osmnx_futurewarning(tmp_path, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_city("west-oakland", use_cache=False)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    code = "from relied.env.cities import load_city; load_city('west-oakland', use_cache=False)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "RELIED_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert res.returncode == 0 and res.stderr == "", res.stderr
