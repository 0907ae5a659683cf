"""metaloop: meta-learning on ``torch.func``.

The Python API mirrors the command line::

    import metaloop
    run = metaloop.train("maml", "sinusoid", "runs/maml", overrides={"iterations": 2000})
    result = metaloop.evaluate(run, steps=[0, 1, 5, 10])     # {"steps": {"10": {"mean", "ci95"}}, ...}

and the algorithms work on any ``nn.Module``::

    from metaloop.algorithms import MAML
    learner = MAML(model, torch.nn.functional.mse_loss, inner_lr=0.01, inner_steps=1)
    optimizer = learner.make_optimizer(1e-3)
    learner.meta_step(task_batch, optimizer)
"""

import importlib
from typing import Any

__version__ = "0.1.0"

#: The public names, by the module that defines them. They are imported on first use (PEP 562), so that
#: ``metaloop --help`` and Ctrl-C at start-up do not wait for torch.
_EXPORTS = {
    **dict.fromkeys(["ALGORITHMS", "ANIL", "FOMAML", "MAML", "MetaLearner", "MetaSGD", "Pretrain", "Reptile"],
                    "metaloop.algorithms"),
    **dict.fromkeys(["BENCHMARKS", "build_learner", "resolve_config"], "metaloop.benchmarks"),
    "MetaloopError": "metaloop.errors",
    **dict.fromkeys(["evaluate", "evaluate_learner", "load_learner"], "metaloop.evaluation"),
    "TaskBatch": "metaloop.tasks.base",
    "train": "metaloop.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'metaloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
