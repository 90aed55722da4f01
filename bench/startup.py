"""Startup: how long a pyml command takes before it does its work, against a baseline tree.

    python -m bench.startup --project /path/to/built/demo [--baseline-ref HEAD~1] [--runs 7]

Runs `pyml models` (opens the project, reads the registry, prints a table: almost nothing
but startup), `pyml --help` and `import pyml.cli` in fresh processes, alternating the current
tree with the pyml package of `--baseline-ref` (extracted with `git archive`, put first on
PYTHONPATH), and prints the median wall time of each and the ratio baseline / current. The
project must be built and trained, with a fresh manifest (run `pyml models` there once), so
neither side parses the dbt project.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "pyml models": ["-c", "from pyml.cli import main; main()", "models"],
    "pyml --help": ["-c", "from pyml.cli import main; main()", "--help"],
    "import pyml.cli": ["-c", "import pyml.cli"],
}


def _extract(ref: str, into: Path) -> Path:
    archive = into / "pyml.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", ref, "pyml"], cwd=REPO, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _time(args: list[str], tree: Path, project: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=project, env=env,
                          capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {tree}:\n{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--baseline-ref", default="HEAD~1")
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _extract(opts.baseline_ref, Path(tmp))
        trees = {"baseline": baseline, "current": REPO}
        print(f"baseline {opts.baseline_ref} vs the working tree; {opts.runs} runs each, "
              f"alternating; project {opts.project}")
        for name, args in COMMANDS.items():
            times: dict[str, list[float]] = {"baseline": [], "current": []}
            _time(args, baseline, opts.project)  # warm the file cache for both
            _time(args, REPO, opts.project)
            for _ in range(opts.runs):
                for side, tree in trees.items():
                    times[side].append(_time(args, tree, opts.project))
            base = statistics.median(times["baseline"])
            cur = statistics.median(times["current"])
            print(f"{name:16s} baseline {base:6.2f} s   current {cur:6.2f} s   "
                  f"ratio {base / cur:4.2f}x")


if __name__ == "__main__":
    main()
