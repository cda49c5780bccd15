"""Deprecated alias of :mod:`ex4d.runner`, kept so that ``from ex4d.run import run, RunResult`` keeps working.

``ex4d.run`` is the function :func:`ex4d.runner.run` (from ``ex4d``'s lazy API). Importing this module makes Python
bind ``ex4d.run`` to the module instead, so the module forwards calls to the function: ``ex4d.run(...)`` works
either way. New code imports :mod:`ex4d.runner`.
"""

import sys
import types

from ex4d.runner import (  # noqa: F401 - re-exported
    FILLS,
    OFFLINE_FILL_VERSION,
    LazyPipeline,
    RunResult,
    check_generation_options,
    run,
)


class _CallableAlias(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableAlias
