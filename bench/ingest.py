"""How fast, and in how much memory, does `seqops ingest` read a big log? Taobao-shaped files of
10^5, 10^6, 10^7 events, each ingested end to end (parse + clean + write + manifest hashes) in a
fresh process. Prints a table, writes bench/results/ingest.json and bench/results/ingest.png
(rows/s and peak RSS per size, this run beside `before`: the figures before issue 12, kept from
the JSON this run replaces).

    python bench/ingest.py [--sizes 100000 1000000 10000000] [--repeat 3] [--engines-at 1000000] [--workdir DIR] [--keep]

The files are generated under --workdir (default /tmp/seqops-ingest-bench) and deleted at the end
(unless --keep). Shape of UserBehavior.csv: no header, `user,item,category,behavior,time`, rows
grouped by user (as the real file), times within a 9-day window in random order within a user,
Zipf item popularity, one category per item, behaviours pv 89% / cart 5.5% / fav 2.9% / buy 2.6%,
and 0.05% bad rows (unknown behaviour, blank item, a missing field) so the quarantine path runs.

Each measurement is one child process: wall seconds of the ingest call (after imports), its CPU
seconds (user + sys, all threads; the machine may be shared, so CPU time is the steadier number),
and the
child's peak RSS (its VmHWM, read by the child at the end: RUSAGE_CHILDREN would count the
parent's pages shared into the fork before exec). `--engines-at N` also times parsing a
clean N-row file into numeric arrays with each available engine (pyarrow streaming, pandas C
engine in chunks, polars if installed): the engine choice is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "ingest.json"
TARGET_ROWS_PER_S, TARGET_RSS_MB = 1_500_000, 3 * 1024  # issue 12, at 10^7 rows
COLUMNS = ["user", "item", "category", "behavior", "time"]
BEHAVIOURS = np.array(["pv", "cart", "fav", "buy"])
BEHAVIOUR_P = [0.89, 0.055, 0.029, 0.026]
START, DAYS = 1511539200, 9  # 2017-11-25
CHUNK = 1_000_000
ENGINE_CHOICE = (
    "pyarrow: its streaming CSV reader parses fastest here (pandas' C engine is several times slower on the "
    "same file), holds one block at a time, and its invalid_row_handler reports each malformed row with its "
    "physical line (single-threaded), which the quarantine needs; pandas' C engine can only skip or warn on "
    "bad lines, and polars (not installed, not measured) fails on a ragged line or truncates it. Threads do "
    "not pay on 2 shared cores and lose the line numbers, so the reader runs single-threaded in a background "
    "thread while the main thread cleans the previous block; CSV blocks of at most 4 MiB parse faster than "
    "16 MiB ones (they stay in the cache)."
)
GLOBAL_STEPS = (
    "The global steps order the valid rows by (user, time) once. A log that comes in runs of one user "
    "(Taobao's file is grouped by user) is ordered run by run: small sorts within runs of about 4096 rows, "
    "then the runs put in user order, so the cost grows with the rows; a user whose runs overlap in time is "
    "merged by a sort of its rows only, and a log with no runs (users interleaved row by row) takes one sort "
    "of every row. The events file keeps min/max statistics only for its numeric columns."
)


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


# --- data ----------------------------------------------------------------------------------------


def generate(path: Path, n: int, seed: int = 0, bad_share: float = 0.0005) -> None:
    """A Taobao-shaped UserBehavior.csv with `n` rows, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 100, 50), max(n // 3, 100)
    item_ids = rng.permutation(5_000_000)[:n_items] + 1
    category_ids = rng.choice(5_000_000, max(n_items // 400, 10), replace=False) + 1  # ~400 items per category
    item_cat = category_ids[rng.integers(0, len(category_ids), n_items)]
    user_rows = rng.multinomial(n, np.full(n_users, 1 / n_users))  # rows per user
    user_ids = np.sort(rng.choice(1_000_000, n_users, replace=False)) + 1
    users = np.repeat(user_ids, user_rows)
    with path.open("w") as fh:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            item = (rng.zipf(1.2, m) - 1) % n_items
            lines = np.char.add(np.char.add(users[start : start + m].astype(str), ","), item_ids[item].astype(str))
            lines = np.char.add(np.char.add(lines, ","), item_cat[item].astype(str))
            lines = np.char.add(np.char.add(lines, ","), BEHAVIOURS[rng.choice(4, m, p=BEHAVIOUR_P)])
            lines = np.char.add(np.char.add(lines, ","), rng.integers(START, START + DAYS * 86_400, m).astype(str))
            bad = np.flatnonzero(rng.random(m) < bad_share)
            for k, b in enumerate(bad):  # three kinds of bad row, in turn
                u, i, c, beh, t = lines[b].split(",")
                lines[b] = [f"{u},{i},{c},click,{t}", f"{u},,{c},{beh},{t}", f"{u},{i},{c},{beh}"][k % 3]
            fh.write("\n".join(lines.tolist()) + "\n")


# --- children (one measurement each) -------------------------------------------------------------


def child_ingest(path: Path, out_dir: Path) -> dict:
    from seqops.config import IngestParams, Paths
    from seqops.features.ingest import ingest, write_outputs
    from seqops.features.lineage import write_manifest

    paths, p = (
        Paths(out_dir),
        IngestParams(format="taobao", data_report=False),
    )  # write_outputs would add the Evidently summary
    result = ingest(path, p, paths)
    write_outputs(result, paths)
    write_manifest(result, paths, p)
    return {"counts": result.counts}


def child_parse(engine: str, path: Path) -> dict:
    """Parse a clean Taobao file into numeric arrays (ids, time) + behaviour codes."""
    if engine.startswith("pyarrow"):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        types = {c: pa.int64() for c in COLUMNS} | {"behavior": pa.dictionary(pa.int32(), pa.string())}
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=COLUMNS, block_size=16 << 20, use_threads=engine.endswith("threads")
            ),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
        rows = sum(batch.num_rows for batch in reader)
    elif engine == "pandas":
        import pandas as pd

        types = {c: "int64" for c in COLUMNS} | {"behavior": "category"}
        rows = sum(len(chunk) for chunk in pd.read_csv(path, names=COLUMNS, header=None, dtype=types, chunksize=CHUNK))
    elif engine == "polars":
        import polars as pl

        reader = pl.read_csv_batched(
            path, has_header=False, new_columns=COLUMNS, batch_size=CHUNK, schema_overrides={"behavior": pl.Categorical}
        )
        rows = 0
        while batches := reader.next_batches(4):
            rows += sum(len(b) for b in batches)
    else:
        raise ValueError(engine)
    return {"rows": rows}


def child_main(argv: list[str]) -> None:
    mode, path = argv[0], Path(argv[1])
    if mode == "ingest":  # imports are not part of the measurement
        import seqops.features.ingest  # noqa: F401
        import seqops.features.lineage  # noqa: F401
    cpu0 = time.process_time()
    started = time.perf_counter()
    info = child_ingest(path, Path(argv[2])) if mode == "ingest" else child_parse(mode, path)
    info |= {
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(info))


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (VmHWM: since its exec, unlike ru_maxrss of a fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(*args: str) -> dict:
    """Run one child in a fresh process; it reports its own peak RSS (MB); add the whole-process wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"process_s": time.perf_counter() - started}


# --- main ----------------------------------------------------------------------------------------


def ingest_once(data: Path, out: Path) -> dict:
    """One ingest into an empty project folder (no earlier vocabulary to compare with), then clean up."""
    shutil.rmtree(out, ignore_errors=True)
    try:
        return measure("ingest", str(data), str(out))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def fastest(runs: list[dict]) -> dict:
    """The run with the least wall time, with every run's seconds and CPU seconds alongside."""
    best = min(runs, key=lambda r: r["seconds"])
    return best | {
        "runs_s": [round(r["seconds"], 3) for r in runs],
        "runs_cpu_s": [round(r["cpu_s"], 3) for r in runs],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def engines() -> list[str]:
    found = ["pyarrow", "pyarrow-threads", "pandas"]
    try:
        import polars  # noqa: F401

        found.append("polars")
    except ImportError:
        pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs per size; the table shows the fastest (least disturbed)"
    )
    ap.add_argument("--engines-at", type=int, default=1_000_000, help="rows of the engine comparison (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/seqops-ingest-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "engine_choice": ENGINE_CHOICE,
        "global_steps": GLOBAL_STEPS,
        "sizes": [],
        "engines": [],
        "before": previous_before(),
        "target_at_10M": {"rows_per_s": TARGET_ROWS_PER_S, "peak_rss_mb": TARGET_RSS_MB},
    }
    try:
        if args.engines_at:
            clean = args.workdir / f"clean-{args.engines_at}.csv"
            generate(clean, args.engines_at, seed=1, bad_share=0.0)
            for engine in engines():
                info = fastest([measure(engine, str(clean)) for _ in range(args.repeat)])
                info |= {"engine": engine, "rows_per_s": info["rows"] / info["seconds"], "load": loadavg()}
                report["engines"].append(info)
            clean.unlink()
        previous = None
        for n in sorted(args.sizes):
            data = args.workdir / f"UserBehavior-{n}.csv"
            generate(data, n)
            load_before = loadavg()
            info = fastest([ingest_once(data, args.workdir / f"out-{n}") for _ in range(args.repeat)])
            row = {
                "rows": n,
                "file_mb": round(data.stat().st_size / 2**20, 1),
                **info,
                "rows_per_s": n / info["seconds"],
                "cpu_rows_per_s": n / info["cpu_s"],
                "load_before": load_before,
                "load_after": loadavg(),
            }
            if previous:
                row["time_growth"] = row["seconds"] / previous["seconds"]
                row["rss_growth"] = row["peak_rss_mb"] / previous["peak_rss_mb"]
                row["size_growth"] = n / previous["rows"]
            report["sizes"].append(row)
            previous = row
            data.unlink()
            print_row(row, header=len(report["sizes"]) == 1)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print_engines(report["engines"])
    print(f"\nengine: {ENGINE_CHOICE}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, OUT.with_suffix(".png"))
    print(f"\nwrote {OUT} and {OUT.with_suffix('.png')}")


def previous_before() -> list[dict]:
    """The figures before issue 12 (rows, seconds, rows/s, peak RSS per size): the `before` of the
    JSON this run replaces, or its `sizes` when it has none (it was measured before the change)."""
    if not OUT.exists():
        return []
    old = json.loads(OUT.read_text())
    keep = ("rows", "seconds", "cpu_s", "rows_per_s", "peak_rss_mb", "load_before")
    return old.get("before") or [{k: row[k] for k in keep if k in row} for row in old.get("sizes", [])]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows, style in (("before (issue 12)", report["before"], "--"), ("now", report["sizes"], "-")):
        if rows:
            sizes = [r["rows"] for r in rows]
            speed.plot(sizes, [r["rows_per_s"] / 1e6 for r in rows], style, marker="o", label=label)
            memory.plot(sizes, [r["peak_rss_mb"] for r in rows], style, marker="o", label=label)
    speed.axhline(TARGET_ROWS_PER_S / 1e6, color="grey", linestyle=":", label="target at 10^7")
    memory.axhline(TARGET_RSS_MB, color="grey", linestyle=":", label="target at 10^7")
    speed.set(
        xscale="log", xlabel="rows", ylabel="M rows / s (wall)", title="seqops ingest: throughput", ylim=(0, None)
    )
    memory.set(xscale="log", yscale="log", xlabel="rows", ylabel="MB", title="peak RSS")
    for axis in (speed, memory):
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'rows':>12} {'file MB':>8} {'seconds':>8} {'cpu s':>7} {'rows/s':>11} {'cpu rows/s':>11} "
            f"{'peak RSS MB':>12} {'growth t/rss (size)':>20} {'load':>5}"
        )
    growth = (
        f"{row['time_growth']:.1f}/{row['rss_growth']:.1f} (×{row['size_growth']:.0f})" if "time_growth" in row else "-"
    )
    print(
        f"{row['rows']:>12,} {row['file_mb']:>8} {row['seconds']:>8.2f} {row['cpu_s']:>7.2f} {row['rows_per_s']:>11,.0f} "
        f"{row['cpu_rows_per_s']:>11,.0f} {row['peak_rss_mb']:>12,.0f} {growth:>20} {row['load_before']:>5}",
        flush=True,
    )


def print_engines(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\nparse only, {rows[0]['rows']:,} clean rows → numeric arrays")
    print(f"{'engine':>16} {'seconds':>8} {'cpu s':>7} {'rows/s':>11} {'peak RSS MB':>12}")
    for r in rows:
        print(
            f"{r['engine']:>16} {r['seconds']:>8.2f} {r['cpu_s']:>7.2f} {r['rows_per_s']:>11,.0f} {r['peak_rss_mb']:>12,.0f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
