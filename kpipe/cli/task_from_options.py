"""`kpipe_task`: an invoke task whose options come from kpipe.cli.options. Invoke reads a task's options from its
signature (inspect.signature, which honours ``__signature__``), so the signature is built from the named specs; help
and repeatable options come from the same specs. The body gets the values as one dict, in the order named."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from invoke.context import Context
from invoke.tasks import Task, task

from .options import spec_for

Values = dict[str, Any]


def kpipe_task(*names: str, **task_kwargs: Any) -> Callable[[Callable[[Context, Values], None]], Task[Any]]:
    def declare(body: Callable[[Context, Values], None]) -> Task[Any]:
        specs = [spec_for(body.__name__, n) for n in names]

        def run(c: Context, **values: Any) -> None:
            body(c, {s.name: values[s.name] for s in specs})

        params = [inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=s.default)
                  for s in specs]
        params.sort(key=lambda p: p.default is not inspect.Parameter.empty)      # required (positional) first
        context = inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Context)
        setattr(run, "__signature__", inspect.Signature([context, *params]))
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(run, attr, getattr(body, attr))
        declared: Task[Any] = task(auto_shortflags=False, help={s.name: s.help for s in specs},
                                   iterable=[s.name for s in specs if s.repeatable], **task_kwargs)(run)
        return declared
    return declare
