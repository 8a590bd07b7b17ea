"""Interleaved A/B runs of a benchmark script: one commit against another (or the working tree).

    python bench/compare.py BASE [CANDIDATE] [--rounds R] [--script S] [-- ARGS...]

BASE and CANDIDATE are git revisions; CANDIDATE defaults to the working tree as it is,
uncommitted changes included. Each round runs the script (default
``bench/sync_throughput.py``) once with each version's code, alternating which goes first,
so that the machine's drift (other load, thermal state, page cache) falls on both alike.
A single run on a shared 2-core machine varies by about 10 %; a change smaller than that
needs this.

``--same-script`` runs the candidate's benchmark for both (a benchmark changed along with
the code, or given options the base's does not know).

A revision is unpacked with ``git archive`` into a temporary folder and its C extension
built there; the code is put first on ``sys.path`` through a small ``xtmail`` package of
links, so the installed (editable) package does not interfere. Prints every run's figures,
then per figure the medians as its last lines: ``<name>_base``, ``<name>_candidate`` and
``<name>_change_percent``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The top-level folders that make up the xtmail package (pyproject.toml's package-dir).
PACKAGES = ("sync", "widgets", "dialogs", "designer_plugins", "app")


def unpack(revision: str, into: Path) -> Path:
    """The tree of ``revision`` in ``into``, with its C extension built."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    build(into)
    return into


def build(tree: Path) -> None:
    if (tree / "setup.py").exists():
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                       cwd=tree, check=True, capture_output=True)


def shim(tree: Path, into: Path) -> Path:
    """A folder holding an ``xtmail`` package whose parts link to ``tree``'s folders."""
    package = into / "xtmail"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in PACKAGES:
        if (tree / name).is_dir():
            (package / name).symlink_to(tree / name)
    return into


def run(tree: Path, path: Path, script: str, args: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run([sys.executable, str(tree / script), *args], cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{script} failed in {tree}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    figures: dict[str, float] = {}
    for line in out.stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and " " not in name:
            try:
                figures[name] = float(value)
            except ValueError:
                continue
    return figures


def main() -> None:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("candidate", nargs="?", help="default: the working tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--script", default="bench/sync_throughput.py")
    parser.add_argument("--same-script", action="store_true",
                        help="run the candidate's benchmark script (and its helpers) for "
                        "both versions: only the xtmail code differs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="xtmail-compare-") as tmp:
        root = Path(tmp)
        trees = {"base": unpack(args.base, root / "base")}
        if args.candidate:
            trees["candidate"] = unpack(args.candidate, root / "candidate")
        else:
            build(REPO)
            trees["candidate"] = REPO
        paths = {name: shim(tree, root / f"path-{name}") for name, tree in trees.items()}
        results: dict[str, list[dict[str, float]]] = {"base": [], "candidate": []}
        for round_no in range(args.rounds):
            order = ["base", "candidate"] if round_no % 2 == 0 else ["candidate", "base"]
            for name in order:
                tree = trees["candidate"] if args.same_script else trees[name]
                figures = run(tree, paths[name], args.script, extra)
                results[name].append(figures)
                print(f"round {round_no + 1} {name}: "
                      + ", ".join(f"{k} {v:g}" for k, v in figures.items()), flush=True)
    names = [k for k in results["base"][0] if all(k in r for r in results["candidate"])]
    for name in names:
        base = statistics.median(r[name] for r in results["base"])
        candidate = statistics.median(r[name] for r in results["candidate"])
        print(f"{name}_base: {base:g}")
        print(f"{name}_candidate: {candidate:g}")
        if base:
            print(f"{name}_change_percent: {100 * (candidate - base) / base:+.1f}")


if __name__ == "__main__":
    main()
