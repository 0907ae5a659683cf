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

from metaloop.algorithms import ALGORITHMS, ANIL, FOMAML, MAML, MetaLearner, MetaSGD, Pretrain, Reptile
from metaloop.benchmarks import BENCHMARKS, build_learner, resolve_config
from metaloop.errors import MetaloopError
from metaloop.evaluation import evaluate, evaluate_learner, load_learner
from metaloop.tasks.base import TaskBatch
from metaloop.training import train

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS", "ANIL", "BENCHMARKS", "FOMAML", "MAML", "MetaLearner", "MetaSGD", "MetaloopError", "Pretrain",
    "Reptile", "TaskBatch", "build_learner", "evaluate", "evaluate_learner", "load_learner", "resolve_config",
    "train",
]
