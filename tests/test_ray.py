"""``--vector ray`` for real: a local Ray instance (2 CPUs) started and stopped here through
relied's own ``start_ray``, reachable on loopback only; the run equals ``--vector subproc`` for
the same seed."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relied.cli import app
from relied.rl.envs import LOOPBACK, start_ray

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray(2, object_store_memory=80 * 1024**2)
    yield
    ray.shutdown()


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _listening(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets that processes ``pids`` listen on (Linux /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                addresses.append(_ip(parts[1].split(":")[0]))
    return addresses


def _ip(hex_addr: str) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
    ip = ipaddress.ip_address(raw)
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")
def test_local_ray_listens_on_loopback_only(local_ray):
    assert ray.util.get_node_ip_address() == LOOPBACK
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}
    addresses = _listening(_descendants(os.getpid()))
    assert len(addresses) >= 3  # GCS, raylet, workers ...
    assert set(addresses) == {LOOPBACK}, addresses


def train(tmp_path, vector: str, algo: str = "ippo", steps: int = 900) -> tuple[dict, str]:
    cfg = tmp_path / f"{vector}.json"
    cfg.write_text(json.dumps({"horizon_s": 300, "heldout_seeds": 1}))
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--city", "west-oakland",
                                   "--agents", "6", "--algo", algo, "--steps", str(steps),
                                   "--envs", "2", "--vector", vector, "--share", "all",
                                   "--runs-dir", str(tmp_path / vector), "--no-progress",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    run_dir = Path(out["run_dir"])
    run_dir = run_dir if run_dir.is_absolute() else Path.cwd() / run_dir
    return out, (run_dir / "metrics.csv").read_text()


@pytest.mark.parametrize(("algo", "steps"), [("ippo", 900), ("tianshou:ppo", 700)])
def test_ray_vector_env_equals_subproc(tmp_path, local_ray, algo, steps):
    """Both engines (``tianshou:ppo`` trains on the Tianshou engine)."""
    assert ray.is_initialized() and len(ray.nodes()) == 1
    on_ray, ray_rows = train(tmp_path, "ray", algo, steps)
    on_subproc, subproc_rows = train(tmp_path, "subproc", algo, steps)
    assert on_ray["iterations"] >= 2 and on_ray["algo"] == algo
    for key in ("env_steps", "decisions", "final_return", "mean_travel_time", "arrival_rate"):
        assert on_ray[key] == on_subproc[key], key
    assert _same_but_wall(ray_rows, subproc_rows)


def _same_but_wall(a: str, b: str) -> bool:
    import csv
    import io

    ra, rb = list(csv.DictReader(io.StringIO(a))), list(csv.DictReader(io.StringIO(b)))
    return len(ra) == len(rb) and all(
        {k: v for k, v in x.items() if k != "wall_s"} == {k: v for k, v in y.items()
                                                           if k != "wall_s"}
        for x, y in zip(ra, rb, strict=True))
