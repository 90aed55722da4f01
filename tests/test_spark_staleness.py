"""Issue 16 on a Spark target: rollback walks the same champion history as on DuckDB
(pyml.store.champions over ml.model_events) and stale predictions are named the same way
(spark_registry.stale_hints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark", reason="pyspark is not installed "
                    "(pip install '<pyml checkout>[spark]')")

from pyml.errors import LifecycleError  # noqa: E402
from pyml.spark.score import score  # noqa: E402
from pyml.spark.train import train  # noqa: E402
from pyml.store import spark_registry  # noqa: E402

from . import test_spark_engine as engine  # noqa: E402

spark = engine.spark  # the module-scoped SparkSession fixture (Hive catalog in a temp folder)
_session, _spec = engine._session, engine._spec


def test_rollback_history_and_stale_predictions(spark: Any, tmp_path: Path) -> None:
    session = _session(tmp_path)
    name = "churn_stale"
    first = _spec(name=name)
    [v1] = train(session, [first], num_workers=2)
    score(session, [first])
    # Two more versions that differ from v1 (other depths), crowned by hand.
    versions = [v1.version]
    for depth in (2, 4):
        spec = _spec(name=name, params={"max_depth": depth}, promote={"policy": "manual"})
        [r] = train(session, [spec], num_workers=2)
        assert r.status == "challenger"
        spark_registry.promote(spark, name, r.version)
        versions.append(r.version)
    assert spark_registry.champion_history(spark, name) == versions
    assert spark_registry.stale_hints(spark, [name]) == [
        f"ml.{name}_predictions was written by v{versions[0]}; the champion is "
        f"v{versions[2]}: run `pyml score {name}`"]
    assert spark_registry.rollback(spark, name).version == versions[1]
    assert spark_registry.rollback(spark, name).version == versions[0]
    assert spark_registry.stale_hints(spark, [name]) == []
    with pytest.raises(LifecycleError) as refused:
        spark_registry.rollback(spark, name)
    assert str(refused.value) == (
        f"model '{name}' has no earlier champion to roll back to (v{versions[0]} was its "
        f"first champion; v{versions[1]}, v{versions[2]} were champion after it and have "
        f"been rolled back); `pyml promote {name} --version N` picks a version by hand")
