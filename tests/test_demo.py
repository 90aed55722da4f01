"""The README's flow on the demo project, end to end, in a temp copy of this repo's dbt project.

dbt build (seeds -> staging -> intermediate -> features, with dbt tests) -> pyml train ->
pyml score -> dbt build of the mart on the predictions. Asserts on the tables produced.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from pyml.cli import cli
from pyml.dbt.package import init_project

REPO = Path(__file__).resolve().parents[1]
PROJECT_ITEMS = ("dbt_project.yml", "profiles.yml", "models", "macros", "seeds", "tests/dbt")


def _dbt(project: Path, *args: str) -> None:
    from dbt.cli.main import dbtRunner

    res = dbtRunner().invoke([*args, "--project-dir", str(project), "--profiles-dir",
                              str(project), "--quiet"])
    assert res.success, f"dbt {' '.join(args)} failed: {res.exception}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo project copied to a temp dir, with `dbt build` already run."""
    root = tmp_path_factory.mktemp("demo")
    ignored = _git_ignored()
    for item in PROJECT_ITEMS:
        src = REPO / item
        dst = root / item
        if src.is_dir():
            # Not what the README's commands generated in this checkout (e.g. the dbt model
            # `pyml sql --output` writes): the demo as cloned.
            shutil.copytree(src, dst, ignore=lambda d, names: [
                n for n in names if (Path(d) / n).relative_to(REPO).as_posix() in ignored])
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    # The demo's packages.yml points at the repo's package folder by a relative path;
    # the copy gets the entry `pyml init` writes in users' projects (the installed copy).
    init_project(root)
    old = os.environ.get("PYML_DEMO_DB")
    os.environ["PYML_DEMO_DB"] = str(root / "demo.duckdb")
    try:
        _dbt(root, "deps")
        _dbt(root, "build")
        yield root
    finally:
        if old is None:
            os.environ.pop("PYML_DEMO_DB", None)
        else:
            os.environ["PYML_DEMO_DB"] = old


def _git_ignored() -> set[str]:
    """Paths under the copied items that git ignores in this checkout (none without git)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--others", "--ignored",
                              "--exclude-standard", "--", *PROJECT_ITEMS],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line.rstrip("/") for line in out.splitlines() if line}


def _pyml(project: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--project-dir", str(project),
                                      "--profiles-dir", str(project)])
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_end_to_end(demo: Path) -> None:
    out = _pyml(demo, "train")
    assert "churn v1 (binary)" in out and "revenue_90d v1 (regression)" in out
    _pyml(demo, "score")
    _dbt(demo, "build", "--select", "customers_at_risk")

    # dbt ran in this process and keeps the file open; share that instance.
    con = duckdb.connect(str(demo / "demo.duckdb"))
    try:
        n_features = con.execute("select count(*) from main.customer_features").fetchall()[0][0]
        n_pred, n_keys, bad_p = con.execute(
            "select count(*), count(distinct (customer_id, as_of_date)), "
            "count(*) filter (where probability < 0 or probability > 1 or probability is null) "
            "from ml.churn_predictions").fetchall()[0]
        assert n_pred == n_features > 1000
        assert n_keys == n_pred
        assert bad_p == 0
        auc, base = con.execute(
            "select value, baseline from ml.metrics where model_name = 'churn' "
            "and split = 'holdout' and metric = 'auc'").fetchall()[0]
        assert base == 0.5
        assert auc > 0.65, f"churn holdout AUC {auc} shows no learned signal"
        rmse, rmse_base = con.execute(
            "select value, baseline from ml.metrics where model_name = 'revenue_90d' "
            "and split = 'holdout' and metric = 'rmse'").fetchall()[0]
        assert rmse < rmse_base
        n_rev = con.execute("select count(*) from ml.revenue_90d_predictions").fetchall()[0][0]
        assert n_rev == n_features
        at_risk, scored = con.execute(
            "select count(*), count(churn_probability) from main.customers_at_risk").fetchall()[0]
        assert at_risk > 0 and scored == at_risk
    finally:
        con.close()
    top = _pyml(demo, "predictions", "churn", "--limit", "5")
    assert "probability" in top.splitlines()[0]
    assert "churn" in _pyml(demo, "models")
    # The committed sources file is what `pyml sources` writes after this flow (the fixture's
    # `dbt build` ran its tests before any ml table existed: a fresh clone's first build).
    fresh = demo / "target" / "_ml__sources.yml"
    _pyml(demo, "sources", "--output", str(fresh))
    committed = REPO / "models" / "ml" / "_ml__sources.yml"
    assert _source_columns(fresh) == _source_columns(committed), (
        "models/ml/_ml__sources.yml is stale: run `make demo` (its `pyml sources` step "
        "rewrites it) and commit it")
    # Byte for byte: `make demo` on a fresh clone must leave `git status` clean.
    assert fresh.read_text() == committed.read_text(), (
        "models/ml/_ml__sources.yml differs from what `pyml sources` writes: run `make demo` "
        "and commit it")


def test_readme_champion_commands_run_as_written(demo: Path) -> None:
    # The README's "Champion, challenger, rollback" block, line by line, on the demo after
    # `make demo` (one version per model): it once promoted a v3 that did not exist. And the
    # README's `-s tag:ml`, which selected nothing before the feature model was tagged.
    if "churn" not in _pyml(demo, "models"):
        _pyml(demo, "train")
    # The same inputs train nothing: after the flow above, whose partial `dbt build --select
    # customers_at_risk` left a manifest without the feature model's compiled SQL, and after
    # a second full `dbt build`, which rebuilds the feature table with the same values (the
    # demo's sums of doubles go through pyml.exact_sum; plain sums changed 1,878 rows in the
    # last bit from one build to the next, so every `pyml train` retrained).
    assert "churn: unchanged since v1" in _pyml(demo, "train", "-s", "tag:ml")
    _dbt(demo, "build")
    assert "churn: unchanged since v1" in _pyml(demo, "train", "-s", "tag:ml")
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Champion, challenger, rollback", 1)[1].split("```")[1]
    lines = [line.split("#", 1)[0] for line in block.splitlines() if line.startswith("pyml ")]
    assert len(lines) >= 4
    for line in lines:
        _pyml(demo, *shlex.split(line)[1:])


def _source_columns(path: Path) -> dict[str, list[str]]:
    """table -> its column names, of a sources YAML."""
    import yaml

    (source,) = yaml.safe_load(path.read_text())["sources"]
    # What dbt docs shows: every table and column described.
    assert all(t["description"] and all(c["description"] for c in t["columns"])
               for t in source["tables"]), path
    return {t["name"]: [c["name"] for c in t["columns"]] for t in source["tables"]}


def test_demo_churn_scores_in_pure_sql_inside_dbt_build(demo: Path) -> None:
    """Issue 5's acceptance: `pyml sql churn --output` makes a dbt model that `dbt build`
    runs, whose rows match ml.churn_predictions to 1e-6 (every row, same labels)."""
    if "churn v" not in _pyml(demo, "models"):
        _pyml(demo, "train", "churn")
    _pyml(demo, "score", "churn")
    target = demo / "models" / "ml" / "churn_scored_sql.sql"
    target.parent.mkdir(exist_ok=True)
    _pyml(demo, "sql", "churn", "--output", str(target))
    assert "{{ ref('customer_features') }}" in target.read_text()
    _dbt(demo, "build", "--select", "churn_scored_sql")
    con = duckdb.connect(str(demo / "demo.duckdb"))
    try:
        rows, matched, worst, labels = con.execute(
            "select (select count(*) from ml.churn_predictions), count(*), "
            "max(abs(s.probability - p.probability)), "
            "count(*) filter (where s.prediction = p.prediction) "
            "from main.churn_scored_sql s join ml.churn_predictions p "
            "using (customer_id, as_of_date)").fetchall()[0]
        n_sql = con.execute("select count(*) from main.churn_scored_sql").fetchall()[0][0]
    finally:
        con.close()
    assert rows == matched == n_sql == labels > 1000
    assert worst <= 1e-6


def _dbt_test_passes(project: Path, select: str) -> bool:
    """`dbt test --select SELECT` passed (False: a test failed; an error fails the test)."""
    from dbt.cli.main import dbtRunner

    res = dbtRunner().invoke(["test", "--select", select, "--project-dir", str(project),
                              "--profiles-dir", str(project), "--quiet"])
    assert res.exception is None, f"dbt test errored: {res.exception}"
    statuses = {str(r.status) for r in res.result}
    assert statuses and statuses <= {"pass", "fail"}, statuses
    return bool(res.success)


def _churn_versions(project: Path) -> list[tuple[int, str]]:
    con = duckdb.connect(str(project / "demo.duckdb"))
    try:
        return [(int(v), str(s)) for v, s in con.execute(
            "select version, status from ml.models where model_name = 'churn' "
            "order by version").fetchall()]
    finally:
        con.close()


def test_stale_predictions_fail_the_champion_test(demo: Path) -> None:
    """Issue 16: predictions_current_champion (pyml's dbt package) on ml.churn_predictions
    (the demo's source) and on the model `pyml sql --output` writes passes after train +
    score, fails after a promote of another version without rescoring, passes after score."""
    _pyml(demo, "train", "churn")
    if _churn_versions(demo) == [(1, "champion")]:  # run alone: a second version to promote
        _pyml(demo, "train", "churn", "--force")
    _pyml(demo, "score", "churn")
    sql_model = demo / "models" / "ml" / "churn_scored_sql.sql"
    sql_model.parent.mkdir(exist_ok=True)
    _pyml(demo, "sql", "churn", "--output", str(sql_model))
    # The YAML `pyml sql` writes beside the model carries the test (model_name: churn).
    assert "pyml.predictions_current_champion" in sql_model.with_suffix(".yml").read_text()
    _dbt(demo, "build", "--select", "churn_scored_sql")
    source = "source:ml.churn_predictions"
    assert _dbt_test_passes(demo, source)

    other = next(v for v, status in _churn_versions(demo) if status != "champion")
    _pyml(demo, "promote", "churn", "--version", str(other))
    assert not _dbt_test_passes(demo, source)
    assert not _dbt_test_passes(demo, "churn_scored_sql")

    _pyml(demo, "score", "churn")
    assert _dbt_test_passes(demo, source)


def test_seeds_are_reproducible(tmp_path: Path) -> None:
    """The committed seeds are exactly what the seeded generator writes."""
    subprocess.run([sys.executable, "-m", "pyml.demo_data", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    committed = sorted((REPO / "seeds").glob("raw_*.csv"))
    assert committed
    for path in committed:
        new = tmp_path / path.name
        assert new.exists(), f"generator did not write {path.name}"
        assert (hashlib.sha256(new.read_bytes()).hexdigest()
                == hashlib.sha256(path.read_bytes()).hexdigest()), f"{path.name} differs"
