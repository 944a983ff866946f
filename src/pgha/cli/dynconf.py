"""The dynamic configuration verbs: `edit-config`, `show-config`, `pause`, `resume` (patronictl's texts).

Rules
1. `edit-config` builds the new configuration from, in this order, ``--replace FILE``, ``--apply FILE`` (merged as
   PATCH /config merges: null deletes), ``-s key.path=value`` and ``-p guc=value`` (values read as YAML), else
   the operator's ``$EDITOR`` (then ``editor``, ``vi``). It shows a unified diff (no colours), asks, and writes
   the DCS ``config`` key with compare-and-swap on the version it read: a concurrent change aborts it.
   Input from stdin (``-``) is applied only with ``--force``, as patronictl does.
2. A configuration pgha cannot use (a wrong type, ``ttl`` below its minimum, ...) is refused before anything is
   written, naming the field.
3. `pause`/`resume` PATCH ``{"pause": true|null}`` through the first member REST API that answers (leader
   first); ``--wait`` then polls every member until each one reports the new state (bounded).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import click
import yaml

from pgha.api.manual import merge_patch
from pgha.cli.ctl import Ctl
from pgha.cli.errors import CliError
from pgha.cli.tables import dump_yaml


def set_path_value(config: dict[str, Any], path: list[str], value: Any, prefix: tuple[str, ...] = ()) -> None:
    """patronictl's ``apply_config_changes`` step: dotted path, GUC names under postgresql.parameters may hold
    dots, None removes."""
    if prefix == ("postgresql", "parameters"):
        path = [".".join(path)]
    key = path[0]
    if len(path) == 1:
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
        return
    if not isinstance(config.get(key), dict):
        config[key] = {}
    set_path_value(config[key], path[1:], value, prefix + (key,))
    if config[key] == {}:
        del config[key]


def apply_pairs(data: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    for pair in pairs:
        if not pair or "=" not in pair:
            raise CliError(f"Invalid parameter setting {pair}: expected key=value (-s) or guc=value (-p)")
        key_path, value = pair.split("=", 1)
        if not key_path.strip():
            raise CliError(f"Invalid parameter setting {pair}: the key is empty")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise CliError(f"Invalid parameter setting {pair}: the value is not YAML ({e.__class__.__name__})") \
                from None
        set_path_value(changed, key_path.strip().split("."), parsed)
    return changed


def load_yaml_text(text: str) -> Any:
    """YAML, forgiving one thing PyYAML refuses: tabs in the indentation (hand-written snippets piped in, as in
    ``"postgresql": {"parameters": {<TAB>"max_connections": 101}}``) are read as two spaces each."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        if "\t" not in text:
            raise
    return yaml.safe_load(re.sub(r"^[ \t]+", lambda m: m.group().replace("\t", "  "), text, flags=re.M))


def read_yaml_file(filename: str, option: str) -> Any:
    try:
        if filename == "-":
            text = sys.stdin.read()
        else:
            with open(filename) as f:
                text = f.read()
    except OSError as e:
        raise CliError(f"{option} {filename}: cannot read it: {e.strerror}") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CliError(f"{option} {filename}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{option} {filename}: expected a mapping of settings, got {type(data).__name__}")
    return data


def invoke_editor(before: str, scope: str) -> tuple[str, Any]:
    editor = os.environ.get("EDITOR") or shutil.which("editor") or shutil.which("vi")
    if not editor:
        raise CliError("EDITOR environment variable is not set. editor or vi are not available")
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix=f"{scope.replace('/', '_')}-config-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(before)
        import shlex
        code = subprocess.call(shlex.split(editor) + [path])
        if code:
            raise CliError(f"Editor exited with return code {code}")
        with open(path, encoding="utf-8") as f:
            after = f.read()
    finally:
        os.unlink(path)
    try:
        return after, yaml.safe_load(after)
    except yaml.YAMLError as e:
        raise CliError(f"the edited configuration is not valid YAML: {getattr(e, 'problem', None) or e}") from None


def unified_diff(before: str, after: str) -> list[str]:
    def lines(text: str) -> list[str]:
        return [line + "\n" for line in text.rstrip("\n").split("\n")]
    return [line.rstrip("\n") for line in difflib.unified_diff(lines(before), lines(after))]


def validate(data: Any) -> None:
    """Rule 2."""
    from pgha.core.dynamic import DynamicConfig
    if not isinstance(data, dict):
        raise CliError(f"the configuration must be a mapping, got {type(data).__name__}")
    _, errors = DynamicConfig.from_dict(data)
    if errors:
        raise CliError("invalid configuration, nothing changed: " + "; ".join(errors))


def do_edit_config(ctl: Ctl, cluster_name: str | None, force: bool, quiet: bool, kvpairs: tuple[str, ...],
                   pgkvpairs: tuple[str, ...], apply_filename: str | None, replace_filename: str | None) -> None:
    scope = ctl.scope(cluster_name)
    view = ctl.view(scope)
    if view.config is None:
        raise CliError(f"The config key does not exist in the cluster {scope}")
    current = json.loads(json.dumps(view.config))
    before = dump_yaml(current)
    after: str | None = None
    changed: Any = current
    if replace_filename:
        changed = read_yaml_file(replace_filename, "--replace")
        after = dump_yaml(changed)
    if apply_filename:
        changed = copy.deepcopy(changed)
        merge_patch(changed, read_yaml_file(apply_filename, "--apply"))
        after = dump_yaml(changed)
    if kvpairs or pgkvpairs:
        pairs = list(kvpairs) + ["postgresql.parameters." + v.lstrip() for v in pgkvpairs]
        changed = apply_pairs(changed, pairs)
        after = dump_yaml(changed)
    if after is None:
        after, changed = invoke_editor(before, scope)
    if changed == current:
        if not quiet:
            click.echo("Not changed")
        return
    validate(changed)
    if not quiet:
        for line in unified_diff(before, after):
            click.echo(line)
    if (apply_filename == "-" or replace_filename == "-") and not force:
        click.echo("Use --force option to apply changes")
        return
    if force or click.confirm("Apply these changes?"):
        if not ctl.dcs(scope).put_key("config", changed, version=view.versions.get("config", 0)):
            raise CliError("Config modification aborted due to concurrent changes")
        click.echo("Configuration changed")


def do_show_config(ctl: Ctl, cluster_name: str | None) -> None:
    scope = ctl.scope(cluster_name)
    view = ctl.view(scope)
    if view.config is not None:
        click.echo(dump_yaml(json.loads(json.dumps(view.config))))


def do_toggle_pause(ctl: Ctl, cluster_name: str | None, paused: bool, wait: bool) -> None:
    scope = ctl.scope(cluster_name)
    view = ctl.view(scope)
    if view.paused == paused:
        raise CliError(f"Cluster is {'already' if paused else 'not'} paused")
    word = "paused" if paused else "resumed"
    members = sorted((m for m in view.members if m.api_url), key=lambda m: (m.name != view.leader, m.name))
    for member in members:
        try:
            code, text = ctl.request(member, "PATCH", "config", {"pause": paused or None})
        except CliError as e:
            click.echo(f"Warning: {e}", err=True)
            continue
        if code != 200:
            raise CliError(f"{'pause' if paused else 'resume'} cluster management: status code={code}, ({text})")
        if wait:
            _wait_pause(ctl, scope, paused, [m for m in view.members if m.api_url], view)
        click.echo(f"Success: cluster management is {word}")
        return
    raise CliError("Can not find accessible cluster member")


def _wait_pause(ctl: Ctl, scope: str, paused: bool, members: list, view) -> None:
    click.echo(f"'{'pause' if paused else 'resume'}' request sent, waiting until it is recognized by all nodes")
    loop_wait = float((view.config or {}).get("loop_wait") or 10)
    timeout = max(10.0, 3 * loop_wait + 2)
    deadline = time.monotonic() + timeout
    remaining = [m.name for m in members]
    while time.monotonic() < deadline:
        remaining = []
        for member in members:
            try:
                status = ctl.patroni_status(member, timeout=2)
            except CliError:
                remaining.append(member.name)
                continue
            if bool(status.get("pause")) != paused:
                remaining.append(member.name)
        if not remaining:
            return
        time.sleep(0.5)
    raise CliError(f"{', '.join(remaining)} did not recognize the {'pause' if paused else 'resume'} "
                   f"within {timeout:.0f} seconds")
