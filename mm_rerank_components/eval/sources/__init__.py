"""The built-in evaluation sources: one folder, one registry the CLI, the runner and the default's refit read.

One module per real source lives here (``widelands``, ``freeorion``; a new source adds a module and a
line to :data:`BUILTIN_TASK_BUILDERS`). The first three sources are still built by
:mod:`mm_rerank_components.eval.tasks` from :mod:`mm_rerank_components.eval.datasets`.

Each task is a real mixed corpus fetched from a Debian package on first use (see
:mod:`mm_rerank_components.eval.datasets`). The label-free default is fitted on the tasks of
:data:`DEFAULT_SOURCES` and the evaluation measures it leave-one-task-out on them; a task outside
that list (``xfig-doc``, added after the default's sources were fixed) is measured with the default
fitted on all of them: a source the default never saw at all, the case every user is in.

Example:
    >>> "wesnoth-units" in TASK_NAMES
    True
    >>> task = load_builtin_task("wesnoth-units")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mm_rerank_components.eval.tasks import EvalTask

__all__ = ["BUILTIN_TASK_BUILDERS", "DEFAULT_SOURCES", "TASK_NAMES", "load_builtin_task"]

#: Task name -> ``"module:function"`` that builds it (imported only when the task is loaded).
BUILTIN_TASK_BUILDERS: dict[str, str] = {
    "tuxpaint-mixed": "mm_rerank_components.eval.tasks:tuxpaint_mixed_task",
    "gcompris-explore": "mm_rerank_components.eval.tasks:gcompris_explore_task",
    "wesnoth-units": "mm_rerank_components.eval.tasks:wesnoth_units_task",
    "widelands-items": "mm_rerank_components.eval.sources.widelands:widelands_items_task",
    "freeorion-items": "mm_rerank_components.eval.sources.freeorion:freeorion_items_task",
    "xfig-doc": "mm_rerank_components.eval.sources.xfig:xfig_doc_task",
}
TASK_NAMES: tuple[str, ...] = tuple(BUILTIN_TASK_BUILDERS)
#: The tasks the shipped default is fitted on (``scripts/fit_default.py``; leave-one-task-out in the
#: evaluation). ``xfig-doc`` stays out: technical-manual screenshots are a kind of source none of these
#: is, so it is kept as a real out-of-domain check of the shipped file rather than a sixth teacher.
DEFAULT_SOURCES: tuple[str, ...] = (
    "tuxpaint-mixed",
    "gcompris-explore",
    "wesnoth-units",
    "widelands-items",
    "freeorion-items",
)


def load_builtin_task(name: str, cache_dir: str | os.PathLike[str] | None = None) -> EvalTask:
    """Build the built-in task ``name`` (fetching its Debian package into ``cache_dir`` once).

    Raises:
        ValueError: ``name`` is not a built-in task (the message lists them).
    """
    try:
        target = BUILTIN_TASK_BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASK_NAMES)}") from None
    module, function = target.split(":")
    builder = getattr(importlib.import_module(module), function)
    task: EvalTask = builder(cache_dir)
    return task
