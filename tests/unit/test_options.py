"""The option table (kpipe/cli/options.py) is the one declaration of kpipe's options: every task's options, the
config's keys and environment variables, and the reproducer's flags agree with it (fast)."""
from __future__ import annotations

import shlex

import pytest
from invoke.collection import Collection
from invoke.parser import Parser, ParserContext

from kpipe.cli import settings, tasks
from kpipe.cli.options import CONFIG_ONLY, OPTIONS, SETTINGS, TASK_VARIANTS, spec_for
from kpipe.cli.run import reproducer

COLLECTION = Collection.from_module(tasks)
TASKS = sorted(COLLECTION.task_names)


@pytest.mark.parametrize("name", TASKS)
def test_each_task_option_is_its_spec(name: str) -> None:
    task = COLLECTION[name]
    for arg in task.get_arguments():
        attr = arg.attr_name or arg.name
        spec = spec_for(name, attr)
        assert arg.help == spec.help, (name, attr)
        assert (arg.kind is list) == spec.repeatable, (name, attr)
        if arg.positional:
            assert spec.default is task.argspec(task.body).parameters[attr].default
        else:
            assert arg.default == ([] if spec.repeatable else spec.default), (name, attr)
        assert arg.names[0] == spec.flag[2:]


def test_every_spec_is_used() -> None:
    used = {arg.attr_name or arg.name for name in TASKS for arg in COLLECTION[name].get_arguments()}
    assert set(OPTIONS) - used == set(CONFIG_ONLY)
    assert {task for task, _ in TASK_VARIANTS} <= set(TASKS)


def test_env_and_config_keys_are_unique_and_invokes() -> None:
    envs = [s.env for s in SETTINGS.values()]
    assert len(set(envs)) == len(envs) == len(SETTINGS)
    for key, spec in SETTINGS.items():
        assert spec.env == f"KPIPE_{key.upper()}"          # the name invoke's env loader reads for the key
    assert all(spec.env is None and spec.config_key is None for spec in OPTIONS.values()
               if spec.config_key not in SETTINGS)
    assert settings.KEYS == ("tree", "arch", "profile", "kconfigs", "jobs", "out", "leak_scan")
    assert settings.BUILTIN == {"tree": None, "arch": None, "profile": "debug", "kconfigs": None, "jobs": 0,
                                "out": None, "leak_scan": True}


def test_config_lists_every_setting_from_its_env_var(tmp_path, monkeypatch) -> None:
    values = {"tree": "debian:6.1", "arch": "arm64", "profile": "fast", "kconfigs": "a.config,b.config", "jobs": "3",
              "out": str(tmp_path / "o"), "leak_scan": "0"}
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for key, value in values.items():
        monkeypatch.setenv(SETTINGS[key].env or "", value)
    eff = settings.effective(tmp_path)
    assert list(eff) == list(SETTINGS)
    for key, spec in SETTINGS.items():
        assert eff[key].source == f"environment {spec.env}"
    assert eff["kconfigs"].value == ("a.config", "b.config") and eff["jobs"].value == 3
    assert eff["leak_scan"].value is False
    lines = settings.describe(tmp_path)
    assert [line.split()[0] for line in lines[:len(SETTINGS)]] == list(SETTINGS)


def _parse(task_name: str, line: str) -> dict[str, object]:
    argv = shlex.split(line)
    assert argv[1] == task_name
    ctx = ParserContext(name=task_name, args=COLLECTION[task_name].get_arguments())
    parsed = Parser(contexts=[ctx]).parse_argv(argv[1:])
    return {k: v for k, v in parsed[0].as_kwargs.items()}


@pytest.mark.parametrize("task_name", ["verify", "premerge", "bisect", "lava", "warnings", "boot", "bench", "clean"])
def test_reproducer_round_trips(task_name: str) -> None:
    task = COLLECTION[task_name]
    given: dict[str, object] = {}
    for arg in task.get_arguments():
        attr = arg.attr_name or arg.name
        spec = spec_for(task_name, attr)
        if spec.repeatable:
            given[attr] = [f"{attr}-1", f"{attr} 2"]
        elif spec.type is bool:
            given[attr] = not spec.default
        elif spec.type is int:
            given[attr] = 7
        else:
            given[attr] = f"{attr}'s value"
    parsed = _parse(task_name, reproducer(task_name, given))
    assert parsed == given
    # what is left unset stays out of the line and parses back to the defaults
    defaults = {a.attr_name or a.name: a.default for a in task.get_arguments()}
    assert reproducer(task_name, defaults).split()[2:] == [
        part for name, value in defaults.items() if value not in (None, False, [], 0)
        for part in (spec_for(task_name, name).flag, str(value))]
    assert _parse(task_name, reproducer(task_name, defaults)) == defaults
