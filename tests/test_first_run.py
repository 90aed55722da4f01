"""What a first-time user meets before any model: the install's metadata and the files the
README's commands leave in the checkout (issue 17's polish list)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]


def test_licence_metadata_is_pep_639() -> None:
    # A TOML table (`license = {text = ...}`) made setuptools print a deprecation banner per
    # build step of `make demo`'s install; an SPDX string needs setuptools 77.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"][0]


def test_readme_outputs_are_ignored_and_the_sources_file_is_not() -> None:
    outputs = ["churn.html", "churn.parquet", "churn.csv", "churn_export/model.json",
               "models/ml/churn_scored_sql.sql", "models/ml/churn_scored_sql.yml"]
    done = subprocess.run(["git", "check-ignore", *outputs], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.stdout.split() == outputs
    kept = ["models/ml/_ml__sources.yml", "seeds/raw_customers.csv", "docs/cli.md"]
    done = subprocess.run(["git", "check-ignore", *kept], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1 and done.stdout == ""  # none of them ignored


# --- the profile's env_var() rendered without importing dbt ---------------------------------

_SET = {"PYML_T_A": "a.duckdb", "PYML_T_EMPTY": "", "PYML_T_ODD": "x {{ y }} 'q'"}
_NAMES = [*_SET, "PYML_T_UNSET", "DBT_ENV_SECRET_PYML_T"]
_expr = st.builds(
    lambda q, name, default, sp: "{{" + sp + "env_var(" + q + name + q + (
        "" if default is None else ", " + q + default + q) + ")" + sp + "}}",
    st.sampled_from(["'", '"']), st.sampled_from(_NAMES),
    st.none() | st.text(alphabet="ab .-_/", max_size=6), st.sampled_from(["", " ", "  "]))
_chunk = _expr | _expr | st.text(alphabet="ab1 .-_/'\"", max_size=6) | st.text(
    alphabet="ab1 .-_/{}%#'\"\n()", max_size=8)
_string = st.lists(_chunk, max_size=4).map("".join)
_scalar = (_string | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()
           | st.dates())
_profile = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=3),
                                          inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(["path", "type", "threads", "extra"]),
                           _profile | _string, max_size=4))
@example(raw={"path": "{{{env_var('PYML_T_A')}}"})  # dbt refuses; the fast path read '{a...'
def test_profile_fast_render_equals_dbts(raw: dict) -> None:
    # A silently different profile would point pyml at another database file: wherever the
    # fast path answers, it answers what dbt's ProfileRenderer does.
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    from pyml.dbt.profile_render import NeedsDbt, render_fast

    saved = {k: os.environ.get(k) for k in _NAMES}
    try:
        for k in _NAMES:
            os.environ.pop(k, None)
        os.environ.update(_SET)
        set_invocation_context(dict(os.environ))
        try:
            expected = ProfileRenderer({}).render_data(raw)
        except Exception:  # dbt refuses it: the fast path must not accept it
            expected = NeedsDbt
        try:
            got = render_fast(raw)
        except NeedsDbt:
            return
        assert repr(got) == repr(expected)  # types too: 1 is not True
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
