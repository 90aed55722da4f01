"""pyml's dbt package (the macros and generic tests shipped inside the pip package) and
`pyml init`, which adds it to a dbt project's packages.yml.

The entry is a local package pointing at the installed copy, so `dbt deps` works offline and
the macros always match the installed pyml. The file is edited as text (one line added or
changed) so the user's comments and layout stay; the edited text is parsed back and must
equal the intended YAML. Where a line edit cannot express the change (a flow-style list,
`packages:` with no items), the YAML is re-serialised instead and the message says that
comments were lost. Every write is atomic; an error changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyml.dbt.project import find_project_dir
from pyml.errors import ProjectError
from pyml.files import replacing

PACKAGE_NAME = "pyml"  # `name:` of the package's dbt_project.yml: macros are pyml.<macro>
_HEADER = "# dbt packages of this project (`dbt deps` installs them).\n"


def package_dir() -> Path:
    """The folder of the installed copy of pyml's dbt package."""
    return Path(__file__).resolve().parents[1] / "dbt_package"


@dataclass(frozen=True)
class InitResult:
    """What `pyml init` did to a project."""

    file: Path  # the packages file edited (packages.yml, or dependencies.yml holding packages)
    package: Path  # the package folder the entry points at
    change: str  # created | added | updated | unchanged
    previous: str | None = None  # updated: the path the entry pointed at before
    rewritten: bool = False  # the whole file was re-serialised (its comments were lost)

    def message(self) -> str:
        """One line for the user."""
        deps = "; run `dbt deps` to install it"
        where = f"(local: {self.package})"
        if self.change == "unchanged":
            return f"{self.file.name} already includes pyml's dbt package {where}"
        if self.change == "created":
            text = f"created {self.file} with pyml's dbt package {where}"
        elif self.change == "added":
            text = f"added pyml's dbt package to {self.file} {where}"
        else:
            text = (f"{self.file}: pyml's dbt package now points at {self.package} "
                    f"(was {self.previous})")
        if self.rewritten:
            text += " (the file was rewritten: its comments were not kept)"
        return text + deps


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ProjectError(f"cannot read {path}: {e.strerror}: make it a readable file and "
                           "run `pyml init` again") from e
    except UnicodeDecodeError as e:
        raise ProjectError(f"{path} is not UTF-8 text: fix or remove it and run "
                           "`pyml init` again") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ProjectError(f"{path} is not valid YAML{line}: fix it and run `pyml init` "
                           "again") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProjectError(f"{path} must be a YAML mapping with a `packages:` list: fix it "
                           "and run `pyml init` again")
    packages = data.get("packages")
    if packages is not None and not (isinstance(packages, list)
                                     and all(isinstance(p, dict) for p in packages)):
        raise ProjectError(f"`packages:` in {path} must be a list of packages: fix it and run "
                           "`pyml init` again")
    return text, data


def _packages_file(root: Path) -> Path:
    """dependencies.yml when it already declares the packages (dbt refuses both files doing
    so), else packages.yml."""
    deps = root / "dependencies.yml"
    if deps.is_file() and not (root / "packages.yml").exists():
        _, data = _read(deps)
        if "packages" in data:
            return deps
    return root / "packages.yml"


def _is_pyml(folder: Path) -> bool:
    """A local package folder that is (or was: a removed venv's copy) pyml's package."""
    try:
        config = yaml.safe_load((folder / "dbt_project.yml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return folder.name == "dbt_package" and folder.parent.name == "pyml"
    return isinstance(config, dict) and config.get("name") == PACKAGE_NAME


def _scalar(value: str) -> str:
    # A JSON string is a valid double-quoted YAML scalar; plain paths stay unquoted.
    return value if re.fullmatch(r"[A-Za-z0-9_./\\-]+", value) else json.dumps(value)


def _append_entry(text: str, entry: str) -> str | None:
    """`text` with `- local: ...` appended to its block-style `packages:` list (None when the
    list is not in block style)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"packages:\s*(#.*)?$", line.rstrip("\r\n"))), None)
    if start is None:
        return None
    last, indent = None, None
    for i in range(start + 1, len(lines)):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not lines[i][0].isspace() and not stripped.startswith("- "):
            break  # the next top-level key
        if indent is None:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        last = i
    if last is None or indent is None:
        return None
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines.insert(last + 1, f"{indent}- local: {entry}\n")
    return "".join(lines)


def _replace_entry(text: str, old: str, entry: str) -> str | None:
    pattern = re.compile(r"(local:\s*)(['\"]?)" + re.escape(old) + r"\2(\s*(#.*)?)$",
                         re.MULTILINE)
    new, count = pattern.subn(lambda m: m.group(1) + entry + m.group(3), text)
    return new if count == 1 else None


def init_project(project_dir: str | Path | None = None) -> InitResult:
    """Add pyml's dbt package to the project's packages.yml (created when missing) as a local
    package pointing at the installed copy; idempotent. Raises ProjectError, changing
    nothing, when the file is malformed or cannot be written."""
    root = find_project_dir(project_dir)
    package = package_dir()
    path = _packages_file(root)
    entry = _scalar(str(package))
    if not path.exists():
        return _write(path, _HEADER + f"packages:\n  - local: {entry}\n",
                      {"packages": [{"local": str(package)}]},
                      InitResult(path, package, "created"))
    text, data = _read(path)
    packages: list[dict[str, Any]] = list(data.get("packages") or [])
    for i, item in enumerate(packages):
        local = item.get("local")
        if not isinstance(local, str):
            continue
        folder = (root / local).resolve()
        if folder == package:
            return InitResult(path, package, "unchanged")
        if _is_pyml(folder):
            packages[i] = {**item, "local": str(package)}
            want = {**data, "packages": packages}
            result = InitResult(path, package, "updated", previous=local)
            return _write(path, _replace_entry(text, local, entry), want, result)
    want = {**data, "packages": [*packages, {"local": str(package)}]}
    if "packages" not in data:
        sep = "" if not text or text.endswith("\n") else "\n"
        edited: str | None = f"{text}{sep}packages:\n  - local: {entry}\n"
    else:
        edited = _append_entry(text, entry)
    return _write(path, edited, want, InitResult(path, package, "added"))


def _write(path: Path, text: str | None, want: dict[str, Any], result: InitResult
           ) -> InitResult:
    """Write `text` when it parses to `want`, else `want` re-serialised; atomically."""
    if text is None or _parsed(text) != want:
        text = yaml.safe_dump(want, sort_keys=False, default_flow_style=False)
        result = InitResult(result.file, result.package, result.change, result.previous,
                            rewritten=result.change != "created")
    if path.exists() and not os.access(path, os.W_OK):
        raise ProjectError(f"cannot write {path}: it is read-only; make it writable and run "
                           "`pyml init` again")
    try:
        with replacing(path) as tmp:
            tmp.write_text(text)
    except OSError as e:
        raise ProjectError(f"cannot write {path}: {e.strerror or e}: check the folder's "
                           "permissions and run `pyml init` again") from e
    return result


def _parsed(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None
