"""Training throughput at city scale (1k / 10k / 100k learners), engines and vector envs.

Rows (each in its own subprocess, so peak memory is the case's own):

* ``scale``: one training iteration (an episode per env from the untrained policy, then the
  full PPO update) of ``ippo`` with ``--share all`` on the congested preset
  ``aguascalientes-peak`` scaled to N learners: the same background share (92%, so N / 0.08
  vehicles), moved to the largest shipped city (north-bayreuth, 2.9x aguascalientes' storage)
  and departures spread over ``600 s x (N / 200) x 18,577 / 54,628`` (aguascalientes' storage /
  north-bayreuth's), i.e. the preset's departures per unit of road storage, so the load per
  metre of road is the preset's; horizon = window + 1,200 s. At 100,000 learners that would
  be 1.25 M vehicles departing over 28 h (beyond the 24 h horizon limit and hours of
  simulation here), so that row has no background (the learners are the fleet) and keeps the
  preset's 600 s window and 1,800 s horizon: 100,000 vehicles on 54,628 vehicles of storage,
  gridlocked and much more congested than the preset (documented in docs/training.md).
* ``engine``: the fast engine vs ``--engine tianshou`` on west-oakland, 20 learners, 2 envs,
  one iteration each (issue 12).
* ``vector``: dummy / subproc / ray vector envs at 1, 2 and 4 envs, aguascalientes-peak
  (200 learners among 2,500 vehicles), one iteration each (issue 12).

Measured per row: env agent-steps/s (simulator steps x learners / iteration wall time),
decisions/s, iterations/s and SGD minibatch steps/s of the update, peak RSS, peak GPU memory
(``torch.cuda.max_memory_allocated`` on CUDA) and the share of the iteration in the env
(sampling minus the policy), the policy's batched forward passes, and the update. Every row
records the device that produced it and ``os.getloadavg()`` before and after it.

    .venv/bin/python benchmarks/train_throughput.py                     # all rows, CPU
    .venv/bin/python benchmarks/train_throughput.py --only scale        # the scale rows
    .venv/bin/python benchmarks/train_throughput.py --device cuda --json --out /some/dir
    .venv/bin/python benchmarks/train_throughput.py --only scale --sizes 10000 --profile

Results: ``results/train_throughput.{md,json}`` for all rows; a subset of kinds writes its own
file (``--only scale``: ``train_throughput_scale``), so re-measuring one kind keeps the others'
file; ``_<device>`` is added off the CPU and ``_profile`` under ``--profile`` (cProfile slows
the run; each profiled iteration also leaves ``profile-<kind>-<n>.prof`` and the top 30
functions by cumulative time in ``.txt``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PRESET = "aguascalientes-peak"
BIG_CITY = "north-bayreuth"
STORAGE_RATIO = 18_577 / 54_628  # aguascalientes / north-bayreuth storage (vehicles)


def scale_case(n: int) -> dict:
    """The preset scaled to ``n`` learners (module docstring)."""
    if n >= 100_000:
        return {"preset": PRESET, "city": BIG_CITY, "n_agents": n, "background_share": 0.0,
                "departure_window_s": 600.0, "horizon_s": 1800.0, "n_envs": 1}
    window = round(600.0 * n / 200 * STORAGE_RATIO)
    return {"preset": PRESET, "city": BIG_CITY, "n_agents": n, "departure_window_s": window,
            "horizon_s": window + 1200.0, "n_envs": 2 if n <= 1000 else 1}


def cases(args) -> list[dict]:
    out = []
    if "engine" in args.only:
        for engine in ("fast", "tianshou"):
            out.append({"kind": "engine", "city": "west-oakland", "n_agents": 20,
                        "horizon_s": 600.0, "n_envs": 2, "engine": engine})
    if "vector" in args.only:
        for vector in ("dummy", "subproc", "ray"):
            for envs in (1, 2, 4):
                out.append({"kind": "vector", "preset": PRESET, "n_envs": envs,
                            "vector": vector})
    if "scale" in args.only:  # last: the long rows
        for n in args.sizes:
            out.append({"kind": "scale", **scale_case(n)})
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_case(case: dict, device: str, profile: Path | None) -> dict:
    """One iteration of one case in this process; the row."""
    import torch

    from relied.rl.config import TrainConfig
    from relied.rl.envs import VectorEnvError
    from relied.rl.model import resolve_device
    from relied.rl.trainer import Trainer

    torch.set_num_threads(1)
    if case.get("engine") == "tianshou":
        device = "cpu"  # the Tianshou engine runs on the CPU (docs/tianshou.md)
    dev = resolve_device(device)
    fields = {k: v for k, v in case.items() if k not in ("kind",)}
    n_agents = fields.get("n_agents")
    cfg = TrainConfig(**fields, algo="ippo", share="all", experts="shortest-path",
                      heldout_seeds=0, total_steps=1, device=device,
                      minibatch=min(512 * max(1, (n_agents or 200) // 20), 8192))
    row = {"kind": case["kind"], "device": str(dev), "agents": cfg.n_agents,
           "vehicles": cfg.scenario().n_vehicles, "city": cfg.city,
           "departure_window_s": cfg.departure_window_s, "horizon_s": cfg.horizon_s,
           "background_share": cfg.background_share, "n_envs": cfg.n_envs,
           "vector": cfg.vector, "engine": cfg.engine, "minibatch": cfg.minibatch,
           "load_before": os.getloadavg()}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        row["gpu"] = torch.cuda.get_device_name(dev)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if cfg.engine == "tianshou":
                from relied.rl.tianshou_engine import TianshouRun

                s = TianshouRun.create(cfg.model_copy(update={"total_steps": 2}), Path(tmp),
                                       progress=False).run()
                wall, steps, decisions = s["wall_s"], s["env_steps"], s["decisions"]
                timing, sgd = None, None
            else:
                trainer = Trainer.create(cfg, Path(tmp), progress=False)
                venv = trainer.vector_env()  # as `relied train` builds it
                try:
                    if profile is not None:
                        import cProfile

                        prof = cProfile.Profile()
                        it = prof.runcall(trainer.iterate, venv)
                        prof.dump_stats(profile)
                        write_profile_summary(profile)
                    else:
                        it = trainer.iterate(venv)
                finally:
                    venv.close()
                    trainer.folder.release()
                wall, steps, decisions = it["wall_s"], it["env_steps"], it["decisions"]
                timing = trainer.timing
                sgd = cfg.epochs * math.ceil(decisions / cfg.minibatch)
        except VectorEnvError as exc:
            return row | {"error": str(exc)}
    row |= {"env_steps": steps, "decisions": decisions, "wall_s": round(wall, 2),
            "agent_steps_per_s": round(steps * cfg.n_agents / wall),
            "decisions_per_s": round(decisions / wall),
            "iterations_per_s": round(1.0 / wall, 5),
            "peak_rss_gib": round(peak_rss_gib(), 2), "load_after": os.getloadavg()}
    if timing is not None:
        env_s = timing["collect_s"] - timing["policy_s"]
        row |= {"share_env": round(env_s / wall, 3),
                "share_policy": round(timing["policy_s"] / wall, 3),
                "share_update": round(timing["update_s"] / wall, 3),
                "sgd_steps": sgd, "sgd_steps_per_s": round(sgd / timing["update_s"], 1)}
    if dev.type == "cuda":
        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
    return row


def write_profile_summary(profile: Path, top: int = 30) -> Path:
    """The ``top`` functions of a cProfile dump by cumulative time, as text beside it."""
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(str(profile), stream=out).sort_stats("cumulative").print_stats(top)
    text = out.getvalue().replace(str(Path(__file__).resolve().parents[1]) + "/", "")
    path = profile.with_suffix(".txt")
    path.write_text(text)
    return path


def code_version() -> dict:
    """The commit measured and the tracked files under ``relied/`` that differ from it (other
    engineers edit the shared checkout while benchmarks run)."""
    root = Path(__file__).resolve().parents[1]

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "modified": git("diff", "--name-only", "HEAD", "--", "relied").split()}


def provenance(report: dict) -> str:
    """Where a report's figures come from, for its results header: CPUs, load average at the
    start (and end), the commit (:func:`code_version`) and files modified under relied/."""
    end = f", {report['load_after']} at the end" if report.get("load_after") else ""
    modified = report["code"]["modified"]
    return (f"{report['cpus']} CPUs shared with other engineers' jobs, load average "
            f"{report['load_before']} at the start{end}, commit {report['code']['commit']}"
            + (f", modified under relied/: {', '.join(modified)}" if modified else ""))


def goals(rows: list[dict]) -> dict:
    out = {}
    r10k = scale_on(rows, 10_000, "cpu")
    if r10k:
        out["cpu_10k_ge_200k_agent_steps_per_s"] = r10k["agent_steps_per_s"] >= 200_000
    r100k = [r for d in ("cpu", "cuda") if (r := scale_on(rows, 100_000, d))]
    if r100k:
        out["100k_iteration_within_24_gib"] = all(r["peak_rss_gib"] <= 24.0 for r in r100k)
    gpu = scale_on(rows, 100_000, "cuda")
    cpu = scale_on(rows, 100_000, "cpu")
    if gpu and cpu:  # issue 13: on a lent GPU >= 5x the CPU figure at 100,000 learners
        out["gpu_100k_ge_5x_cpu"] = gpu["agent_steps_per_s"] >= 5 * cpu["agent_steps_per_s"]
    return out


def scale_on(rows: list[dict], n: int, device: str) -> dict | None:
    """The completed scale row of ``n`` learners on ``device`` (``cuda:0`` counts as cuda)."""
    return next((r for r in rows if r["kind"] == "scale" and r["agents"] == n
                 and r["device"].split(":")[0] == device and "error" not in r), None)


def speedups(rows: list[dict]) -> list[str]:
    """GPU / CPU ratios per size where both devices have a row (same host when merged)."""
    lines = []
    for n in sorted({r["agents"] for r in rows if r["kind"] == "scale"}):
        gpu, cpu = scale_on(rows, n, "cuda"), scale_on(rows, n, "cpu")
        if gpu and cpu:
            lines.append(
                f"- {n:,} learners: agent-steps/s cuda / cpu = "
                f"{gpu['agent_steps_per_s'] / cpu['agent_steps_per_s']:.2f}x; update "
                f"(SGD steps/s) {gpu['sgd_steps_per_s'] / cpu['sgd_steps_per_s']:.1f}x; "
                f"env share {gpu['share_env']:.0%} (cuda) vs {cpu['share_env']:.0%} (cpu)")
    return lines


def markdown(report: dict) -> str:
    rows = report["rows"]
    host = (f"host {report['platform']} with {report.get('gpu', 'no GPU')} and "
            f"{report['cpu_count']} CPUs" if report.get("sources") else
            f"{report['cpu_count']} CPUs shared with other engineers' jobs")
    head = (f"# Training throughput (`{report['command']}`, device {report['device']}, "
            f"{host}, 1 torch thread, load average "
            f"{[round(x, 2) for x in report['load_start']]} at the start)")
    lines = [head, "", "One training iteration per row (an episode per env, then the PPO "
             "update), ippo, `--share all`. Scale rows: the aguascalientes-peak demand "
             "scaled to N learners on north-bayreuth (see the module docstring).", "",
             "| kind | device | agents | vehicles | window (s) | envs | vector | engine | "
             "env steps | decisions | wall (s) | agent-steps/s | decisions/s | SGD steps/s | "
             "env / policy / update | peak RSS (GiB) | peak GPU (GiB) | load 1-min before / "
             "after |", "|" + "---|" * 18]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['device']} | {r['agents']} | {r['vehicles']:,} | "
                         f"{r['departure_window_s']:g} | {r['n_envs']} | {r['vector']} | "
                         f"{r['engine']} | {r['error']} |" + " |" * 10)
            continue
        share = (f"{r['share_env']:.0%} / {r['share_policy']:.0%} / {r['share_update']:.0%}"
                 if "share_env" in r else "n/a")
        lines.append(
            f"| {r['kind']} | {r['device']} | {r['agents']:,} | {r['vehicles']:,} | "
            f"{r['departure_window_s']:g} | {r['n_envs']} | {r['vector']} | {r['engine']} | "
            f"{r['env_steps']:,} | {r['decisions']:,} | {r['wall_s']:.1f} | "
            f"{r['agent_steps_per_s']:,} | {r['decisions_per_s']:,} | "
            f"{r.get('sgd_steps_per_s', 'n/a')} | {share} | {r['peak_rss_gib']:.2f} | "
            f"{r.get('peak_gpu_gib', 'n/a')} | {r['load_before'][0]:.2f} / "
            f"{r['load_after'][0]:.2f} |")
    lines += ["", "Code per row (commit; files under relied/ modified in the shared checkout "
              "when the row started): " + "; ".join(
                  f"{r['agents']:,} {r['kind']}: {r['code']['commit']}"
                  + (f" + {', '.join(r['code']['modified'])}" if r["code"]["modified"] else "")
                  for r in rows if "code" in r)]
    if report.get("sources"):
        lines += ["", "Merged from these runs (each on the host above):", ""]
        lines += [f"- `{c}`" for c in report["sources"]]
    if ratios := speedups(rows):
        lines += ["", "GPU vs CPU on the same host:", "", *ratios]
    lines += ["", "Goals: " + (", ".join(f"{k}: {v}" for k, v in report["goals"].items())
                               or "none measured")]
    return "\n".join(lines) + "\n"


def merge(paths: list[Path], out: Path) -> dict:
    """One report of several runs' json reports (e.g. ``--device cuda`` and ``--device cpu`` on
    the same GPU machine), written as ``train_throughput_scale_gpu.{md,json}`` under ``out``."""
    reports = [json.loads(p.read_text()) for p in paths]
    hosts = {(r["platform"], r["cpu_count"]) for r in reports}
    if len(hosts) != 1:
        raise SystemExit(f"error: --merge needs reports from one host, got {sorted(hosts)}")
    rows = [row for r in reports for row in r["rows"]]
    report = {"device": "+".join(dict.fromkeys(r["device"] for r in reports)),
              "cpu_count": reports[0]["cpu_count"], "platform": reports[0]["platform"],
              "load_start": reports[0]["load_start"],
              "command": "python benchmarks/train_throughput.py --merge "
                         + " ".join(str(p) for p in paths),
              "sources": [r["command"] for r in reports], "rows": rows, "goals": goals(rows)}
    gpus = {row["gpu"] for row in rows if "gpu" in row}
    if gpus:
        report["gpu"] = ", ".join(sorted(gpus))
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput_scale_gpu.json").write_text(json.dumps(report, indent=2))
    (out / "train_throughput_scale_gpu.md").write_text(markdown(report))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--sizes", default="1000,10000,100000",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--only", default="scale,engine,vector",
                   type=lambda s: s.split(","), help="row kinds: scale, engine, vector")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--profile", action="store_true",
                   help="cProfile each fast-engine iteration into --out/profile-<n>.prof")
    p.add_argument("--merge", nargs="+", type=Path, metavar="REPORT.json",
                   help="merge json reports of one host (cuda and cpu runs on a GPU machine) "
                        "into --out/train_throughput_scale_gpu.{md,json}")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print its row
    args = p.parse_args()
    if args.merge:
        report = merge(args.merge, args.out)
        print(json.dumps(report) if args.json else markdown(report))
        return
    if args.case:
        case = json.loads(args.case)
        prof = (args.out / f"profile-{case['kind']}-{case.get('n_agents', case.get('n_envs'))}"
                f".prof") if args.profile else None
        print(json.dumps(run_case(case, args.device, prof)), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in ("scale", "engine", "vector") if k in args.only]
    tag = ("" if len(kinds) == 3 else "_" + "_".join(kinds)) + \
        ("" if args.device == "cpu" else f"_{args.device}") + ("_profile" if args.profile else "")
    report = {"device": args.device, "cpu_count": os.cpu_count(),
              "platform": platform.platform(), "load_start": os.getloadavg(),
              "command": " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
              "rows": []}
    for case in cases(args):
        version = code_version()  # the row's subprocess imports the checkout as it is now
        cmd = [sys.executable, __file__, "--case", json.dumps(case), "--device", args.device,
               "--out", str(args.out)] + (["--profile"] if args.profile else [])
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"kind": case["kind"], "device": args.device,
                   "agents": case.get("n_agents", 200), "vehicles": 0,
                   "departure_window_s": case.get("departure_window_s", 600.0),
                   "n_envs": case["n_envs"], "vector": case.get("vector", "dummy"),
                   "engine": case.get("engine", "fast"),
                   "error": f"exit {proc.returncode}: {tail}"}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = round(time.perf_counter() - start, 1)
        row["code"] = version
        report["rows"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        report["goals"] = goals(report["rows"])  # written after every row: a cut run keeps
        (args.out / f"train_throughput{tag}.json").write_text(json.dumps(report, indent=2))
        (args.out / f"train_throughput{tag}.md").write_text(markdown(report))
    if args.json:
        print(json.dumps(report))
    else:
        print(markdown(report))


if __name__ == "__main__":
    main()
