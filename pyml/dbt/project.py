"""The dbt side: project, profile, target, manifest and the model specs declared in it.

pyml never keeps a second config file. The DuckDB path comes from the dbt profile (rendered
with dbt's own renderer, so `env_var()` behaves as in dbt), the specs and relation names come
from dbt's manifest, and the manifest is refreshed with `dbt parse` (dbt's Python API) when it
is missing, older than the project's files or profiles.yml, or parsed for another profile,
target or vars than the ones pyml runs with (see :func:`manifest_parsed_for`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyml.dbt.profile_render import NeedsDbt, render_fast
from pyml.dbt.spec import ModelSpec, parse_specs
from pyml.dbt.targets import ENGINES, SparkTarget, spark_target
from pyml.errors import ProjectError, SelectionError, SpecError

Log = Callable[[str], None]

# Files whose change makes a parsed manifest stale (besides everything under the paths below).
_PROJECT_FILES = ("dbt_project.yml", "packages.yml", "dependencies.yml", "selectors.yml")
_PATH_KEYS = {
    "model-paths": ["models"],
    "macro-paths": ["macros"],
    "seed-paths": ["seeds"],
    "snapshot-paths": ["snapshots"],
    "test-paths": ["tests"],
    "analysis-paths": ["analyses"],
}


@dataclass(frozen=True)
class Project:
    """A dbt project with its resolved profile target and parsed manifest."""

    project_dir: Path  # folder holding dbt_project.yml
    profiles_dir: Path  # folder holding profiles.yml
    profile_name: str  # `profile:` of dbt_project.yml
    target_name: str  # the target in use (--target or the profile's default)
    db_path: Path  # the DuckDB file of that target (duckdb targets; unused on Spark)
    manifest_path: Path  # target/manifest.json
    manifest: dict[str, Any]  # the parsed manifest
    engine: str = "duckdb"  # the target's type: duckdb | spark (pyml.dbt.project.ENGINES)
    spark: SparkTarget | None = None  # engine spark: the session settings

    def run_results(self) -> dict[str, Any] | None:
        """dbt's last run_results.json, if there is one."""
        path = self.manifest_path.parent / "run_results.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data


def find_project_dir(project_dir: str | Path | None) -> Path:
    """Resolve --project-dir as dbt does: flag, DBT_PROJECT_DIR, then cwd and its parents."""
    given = project_dir or os.environ.get("DBT_PROJECT_DIR")
    if given:
        path = Path(given).expanduser().resolve()
        if not (path / "dbt_project.yml").is_file():
            raise ProjectError(
                f"no dbt_project.yml in {path}: pass --project-dir pointing at your dbt project"
            )
        return path
    cwd = Path.cwd()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "dbt_project.yml").is_file():
            return candidate
    raise ProjectError(
        f"no dbt_project.yml in {cwd} or its parents: run pyml inside a dbt project "
        "or pass --project-dir"
    )


def find_profiles_dir(profiles_dir: str | Path | None) -> Path:
    """Resolve --profiles-dir as dbt does: flag, DBT_PROFILES_DIR, cwd, then ~/.dbt."""
    given = profiles_dir or os.environ.get("DBT_PROFILES_DIR")
    if given:
        return Path(given).expanduser().resolve()
    if (Path.cwd() / "profiles.yml").is_file():
        return Path.cwd()
    return Path.home() / ".dbt"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProjectError(f"{path} is not valid YAML: {_yaml_problem(e)}; fix the file and "
                           "retry") from e
    except OSError as e:
        raise ProjectError(f"cannot read {path}: {e.strerror}") from e


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one line: the problem and where it is."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{error.problem}{where}"
    return " ".join(str(error).split())


def _render_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """Render env_var() and other jinja in a profile exactly as dbt does."""
    try:
        fast: dict[str, Any] = render_fast(raw)
        return fast
    except NeedsDbt:
        pass
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    set_invocation_context(dict(os.environ))
    try:
        rendered: dict[str, Any] = ProfileRenderer({}).render_data(raw)
    except Exception as e:  # dbt raises CompilationError with its own message
        raise ProjectError(f"cannot render the dbt profile: {e}".replace("\n", " ")) from e
    return rendered


def resolve_db_path(profiles_dir: Path, profile_name: str, target: str | None) -> tuple[str, Path]:
    """Find the DuckDB file of a profile target. Returns (target name, path)."""
    target_name, path, _, _ = resolve_target(profiles_dir, profile_name, target)
    return target_name, path


def resolve_target(profiles_dir: Path, profile_name: str, target: str | None
                   ) -> tuple[str, Path, dict[str, Any], str | None]:
    """Find a profile target: (target name, DuckDB file, the rendered output, the profile's
    default target)."""
    profiles_file = profiles_dir / "profiles.yml"
    if not profiles_file.is_file():
        raise ProjectError(
            f"no profiles.yml in {profiles_dir}: pass --profiles-dir or set DBT_PROFILES_DIR"
        )
    profiles = _read_yaml(profiles_file) or {}
    if not isinstance(profiles, dict) or profile_name not in profiles:
        if os.environ.get("DBT_PROFILE") == profile_name:
            raise ProjectError(f"profile '{profile_name}' (named by DBT_PROFILE) is not in "
                               f"{profiles_file}: add it or fix the variable")
        raise ProjectError(
            f"profile '{profile_name}' (named in dbt_project.yml) is not in {profiles_file}: "
            "add it or fix `profile:` in dbt_project.yml"
        )
    profile = _render_profile({profile_name: profiles[profile_name]})[profile_name]
    outputs = profile.get("outputs") if isinstance(profile, dict) else None
    if not isinstance(outputs, dict) or not outputs:
        raise ProjectError(f"profile '{profile_name}' in {profiles_file} has no outputs")
    # dbt's own order: --target, then DBT_TARGET, then the profile's (the variable was
    # ignored: `DBT_TARGET=prod pyml train` trained on dev while dbt built prod; an audit).
    target_name = target or os.environ.get("DBT_TARGET") or profile.get("target")
    if not target_name:
        raise ProjectError(
            f"profile '{profile_name}' in {profiles_file} has no default target: pass --target"
        )
    if target_name not in outputs:
        raise ProjectError(
            f"target '{target_name}' is not in profile '{profile_name}' ({profiles_file}); "
            f"available targets: {', '.join(sorted(outputs))}"
        )
    output = outputs[target_name]
    if not isinstance(output, dict) or output.get("type") not in ENGINES:
        kind = output.get("type") if isinstance(output, dict) else None
        raise ProjectError(
            f"target '{target_name}' of profile '{profile_name}' is of type {kind!r}; "
            "pyml works on DuckDB targets (type: duckdb) and Spark targets (type: spark, "
            "method: session)"
        )
    default = profile.get("target")
    if output["type"] == "spark":
        # No file: the data lives in the Spark catalog (see spark_target).
        return target_name, Path(), output, str(default) if default else None
    path = str(output.get("path") or "")
    if not path or path == ":memory:" or path.startswith("md:"):
        raise ProjectError(
            f"target '{target_name}' of profile '{profile_name}' has no DuckDB file path "
            "(path:); pyml needs a database file that dbt and pyml share"
        )
    # dbt-duckdb opens a relative path from the working directory; do the same.
    return (target_name, Path(path).expanduser().resolve(), output,
            str(default) if default else None)


def _project_paths(project_dir: Path, config: dict[str, Any]) -> Iterable[Path]:
    for name in _PROJECT_FILES:
        yield project_dir / name
    for key, default in _PATH_KEYS.items():
        for folder in config.get(key) or default:
            root = project_dir / folder
            if root.is_dir():
                yield from (p for p in root.rglob("*") if p.is_file())


def manifest_is_stale(project_dir: Path, manifest_path: Path, config: dict[str, Any],
                      profiles_file: Path | None = None) -> bool:
    """True when the manifest is missing or older than any file dbt would parse (or than
    profiles.yml: a target's schema is written into every node of the manifest)."""
    if not manifest_path.is_file():
        return True
    built = manifest_path.stat().st_mtime
    extra = [profiles_file] if profiles_file else []
    return any(p.exists() and p.stat().st_mtime > built
               for p in (*_project_paths(project_dir, config), *extra))


# pyml's record of what it last parsed the manifest for, beside manifest.json.
PARSE_RECORD = "pyml_parse.json"


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def parse_key(profiles_dir: Path, profile_name: str, target_name: str,
              output: dict[str, Any]) -> dict[str, Any]:
    """What a manifest depends on besides the project's files: the profile, the target, the
    command-line vars (pyml passes none), profiles.yml and the rendered target output.

    The output's `path` is left out: pyml reads the database file from the live profile, and
    the manifest only derives the catalog name from it, which pyml does not use. Leaving it
    out keeps a copied project (or a DB path from an env var) from re-parsing for nothing.
    """
    rendered = {k: v for k, v in output.items() if k != "path"}
    return {
        "profile": profile_name,
        "target": target_name,
        "vars": {},
        "profiles_sha256": _sha256(profiles_dir / "profiles.yml"),
        "output_sha256": hashlib.sha256(
            json.dumps(rendered, sort_keys=True, default=str).encode()).hexdigest(),
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _invocation(data: Any) -> str | None:
    meta = data.get("metadata") if isinstance(data, dict) else None
    found = meta.get("invocation_id") if isinstance(meta, dict) else None
    return str(found) if found else None


def manifest_parsed_for(manifest: dict[str, Any], folder: Path, key: dict[str, Any],
                        default_target: str | None) -> bool:
    """Whether `manifest` (read from `folder`) was parsed for `key` (see :func:`parse_key`),
    as far as we know.

    dbt writes neither the target nor the vars into the manifest, and any `dbt parse` or
    `dbt build --target prod` overwrites it, so a fresh manifest may describe another target's
    schemas (pyml would then silently read prod tables under --target dev). The manifest's
    invocation id says which dbt run wrote it; it is trusted only when that run is known:
    pyml's own parse (recorded in PARSE_RECORD) with the same key, or the dbt command whose
    run_results.json carries the same invocation id and ran with the same profile, target and
    vars and an identical profiles.yml. Anything else is unknown and costs one re-parse.
    """
    invocation = _invocation(manifest)
    if invocation is None:
        return False
    record = _read_json(folder / PARSE_RECORD)
    if isinstance(record, dict) and record.get("invocation_id") == invocation:
        return bool(record.get("key") == key)
    results = _read_json(folder / "run_results.json")
    if _invocation(results) != invocation:
        return False
    args = results.get("args") or {}
    if not isinstance(args, dict):
        return False
    ran_dir = args.get("profiles_dir")
    return bool(
        (args.get("target") or default_target) == key["target"]
        and (args.get("profile") or key["profile"]) == key["profile"]
        and not args.get("vars")
        and ran_dir
        and _sha256(Path(str(ran_dir)).expanduser() / "profiles.yml") == key["profiles_sha256"]
    )


def _record_parse(manifest: dict[str, Any], folder: Path, key: dict[str, Any]) -> None:
    """Remember what pyml just parsed the manifest for (best effort: without the record the
    next run re-parses, which is slower but never wrong)."""
    invocation = _invocation(manifest)
    if invocation is None:
        return
    with contextlib.suppress(OSError):
        (folder / PARSE_RECORD).write_text(
            json.dumps({"invocation_id": invocation, "key": key}, indent=2))


def _dbt_args(project: Path, profiles_dir: Path, target: str) -> list[str]:
    return ["--project-dir", str(project), "--profiles-dir", str(profiles_dir), "--target", target]


def run_dbt(args: Sequence[str], *, silent: bool = False) -> Any:
    """Invoke dbt in-process through its Python API; raise ProjectError when it fails.

    `silent`: dbt prints nothing (`--log-level none`), and a failure's error is the
    ProjectError's message only, not also dbt's own lines before it."""
    from dbt.cli.main import dbtRunner

    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    errors: list[str] = []

    def keep_errors(event: Any) -> None:
        if event.info.level == "error" and event.info.msg:
            errors.append(str(event.info.msg))

    argv = [*args, "--log-level", "none"] if silent else list(args)
    result = dbtRunner(callbacks=[keep_errors] if silent else []).invoke(argv)
    if not result.success:
        detail = (f": {result.exception}" if result.exception else f": {errors[-1]}" if errors
                  else " (see dbt's messages above)")
        # dbt's messages span many indented lines; the CLI prints one.
        raise ProjectError(" ".join(f"`dbt {' '.join(args[:1])}` failed{detail}".split()))
    return result.result


def load_project(
    project_dir: str | Path | None = None,
    profiles_dir: str | Path | None = None,
    target: str | None = None,
    *,
    log: Log | None = None,
) -> Project:
    """Resolve the project, profile and target, and load a fresh manifest."""
    root = find_project_dir(project_dir)
    config = _read_yaml(root / "dbt_project.yml") or {}
    if not isinstance(config, dict) or not config.get("profile"):
        raise ProjectError(f"{root / 'dbt_project.yml'} has no `profile:`; add one")
    profiles = find_profiles_dir(profiles_dir)
    profile_name = os.environ.get("DBT_PROFILE") or str(config["profile"])  # as dbt reads it
    target_name, db_path, output, default_target = resolve_target(profiles, profile_name,
                                                                  target)
    # Checked before `dbt parse`, which would fail on a missing adapter with dbt's own words.
    spark = spark_target(target_name, output) if output["type"] == "spark" else None
    # Where `dbt parse` writes it: DBT_TARGET_PATH before dbt_project.yml's target-path (pyml
    # read target/ while dbt wrote the fresh manifest elsewhere, and trained an old spec).
    target_path = os.environ.get("DBT_TARGET_PATH") or str(config.get("target-path") or "target")
    manifest_path = root / target_path / "manifest.json"
    key = parse_key(profiles, profile_name, target_name, output)
    stale = manifest_is_stale(root, manifest_path, config, profiles / "profiles.yml")
    manifest = None if stale else _read_manifest(manifest_path)
    if manifest is None or not manifest_parsed_for(manifest, manifest_path.parent, key,
                                                   default_target):
        if log:
            why = "missing or stale" if stale else f"not known to be parsed for {target_name}"
            log(f"Parsing the dbt project in {root} (manifest {why}) ...")
        run_dbt(["parse", "--quiet", *_dbt_args(root, profiles, target_name)], silent=True)
        manifest = _read_manifest(manifest_path)
        _record_parse(manifest, manifest_path.parent, key)
    return Project(root, profiles, profile_name, target_name, db_path,
                   manifest_path, manifest, str(output["type"]), spark)


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise ProjectError(
            f"cannot read the dbt manifest {manifest_path}: {e}; delete it and rerun "
            "(pyml runs `dbt parse` to rebuild it)"
        ) from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("nodes"), dict):
        raise ProjectError(
            f"{manifest_path} is not a dbt manifest; delete it and rerun "
            "(pyml runs `dbt parse` to rebuild it)"
        )
    return manifest


def _source_file(node: dict[str, Any]) -> str:
    patch = node.get("patch_path") or node.get("original_file_path") or node.get("unique_id")
    return str(patch).split("://", 1)[-1]


def all_specs(project: Project) -> list[ModelSpec]:
    """Every pyml spec declared in the project, in manifest order; names must be unique."""
    specs: list[ModelSpec] = []
    seen: dict[str, ModelSpec] = {}
    for node in project.manifest["nodes"].values():
        if node.get("resource_type") != "model":
            continue
        meta = (node.get("config") or {}).get("meta") or node.get("meta") or {}
        if "pyml" not in meta:
            continue
        for spec in parse_specs(
            meta["pyml"],
            feature_model=node["unique_id"],
            schema=node["schema"],
            relation=node.get("alias") or node["name"],
            source_file=_source_file(node),
        ):
            if spec.name in seen:
                raise SpecError(
                    f"{spec.where}: model name '{spec.name}' is already declared in "
                    f"{seen[spec.name].where}; model names must be unique"
                )
            seen[spec.name] = spec
            specs.append(spec)
    return specs


def select_specs(
    project: Project, names: Sequence[str] = (), select: Sequence[str] = ()
) -> list[ModelSpec]:
    """Pick specs by pyml model name and/or dbt selection syntax (on the feature models):
    the union of both, as dbt's own selectors add up, each spec once."""
    specs = all_specs(project)
    if not specs:
        raise SelectionError(
            f"no pyml models are declared in {project.project_dir}: add a `config: meta: pyml:` "
            "spec to a feature model's YAML (see README)"
        )
    by_name = {s.name: s for s in specs}
    chosen: list[ModelSpec] = []
    for name in names:
        if name not in by_name:
            raise SelectionError(
                f"no pyml model named '{name}'; declared models: {', '.join(sorted(by_name))}"
            )
        if by_name[name] not in chosen:  # a name given twice runs once
            chosen.append(by_name[name])
    if select:
        ids = _dbt_ls(project, select)
        picked = [s for s in specs if s.feature_model in ids]
        if not picked:
            raise SelectionError(
                f"--select {' '.join(select)} matched no dbt model that declares a pyml spec"
            )
        chosen.extend(s for s in picked if s not in chosen)
    return chosen if (names or select) else specs


def _dbt_ls(project: Project, select: Sequence[str]) -> set[str]:
    # --log-level none: `dbt ls` prints its rows on stdout even with --quiet, and stdout is
    # pyml's (the rows come back in the result; a failure still raises ProjectError).
    args = ["ls", "--quiet", "--log-level", "none", "--resource-type", "model",
            "--output", "json",
            "--output-keys", "unique_id", "--select", *select,
            *_dbt_args(project.project_dir, project.profiles_dir, project.target_name)]
    rows = run_dbt(args) or []
    return {json.loads(r)["unique_id"] for r in rows}


def resolve_relation(project: Project, ref: str, where: str | None = None,
                     what: str = "score.relation") -> tuple[str, str]:
    """A `score.relation` value -> (schema, identifier): a dbt model name or schema.table.

    `where` (the spec's location) prefixes the error when it is neither; `what` names the
    value there (a command's argument is no spec key)."""
    for node in project.manifest["nodes"].values():
        if node.get("resource_type") in ("model", "seed", "snapshot") and node["name"] == ref:
            return str(node["schema"]), str(node.get("alias") or node["name"])
    if ref.count(".") == 1:
        schema, name = ref.split(".")
        return schema, name
    prefix = f"{where}: " if where else ""
    raise SpecError(
        f"{prefix}{what} '{ref}' is neither a dbt model in this project nor "
        "schema.table; name a model that `dbt ls` lists, or write schema.table"
    )


def invocation_for(project: Project, unique_id: str) -> str | None:
    """The dbt invocation id of the last run that built `unique_id`, if known."""
    results = project.run_results()
    if not results:
        return None
    if any(r.get("unique_id") == unique_id for r in results.get("results", [])):
        invocation = (results.get("metadata") or {}).get("invocation_id")
        return str(invocation) if invocation else None
    return None
