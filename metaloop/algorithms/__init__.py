"""Meta-learning algorithms, each in its own file on the shared :class:`MetaLearner` base; this file is the
registry (a CLI name per class, one line each). What an algorithm reads and needs is declared on its class."""

from collections.abc import Iterable

from metaloop.algorithms.anil import ANIL
from metaloop.algorithms.base import MetaLearner
from metaloop.algorithms.leo import LEO
from metaloop.algorithms.maml import FOMAML, MAML
from metaloop.algorithms.maml_icl import MAMLICL
from metaloop.algorithms.anil_rl import ANILRL
from metaloop.algorithms.maml_rl import FOMAMLRL, MAMLRL
from metaloop.algorithms.pretrain_rl import PretrainRL
from metaloop.algorithms.metaicl import MetaICL
from metaloop.algorithms.metaoptnet import MetaOptNet, MetaOptNetRidge, MetaOptNetSVM
from metaloop.algorithms.metasgd import MetaSGD
from metaloop.algorithms.metasgd_rl import MetaSGDRL
from metaloop.algorithms.pretrain import Pretrain
from metaloop.algorithms.promp import ProMP
from metaloop.algorithms.protonet import ProtoNet
from metaloop.algorithms.reptile import Reptile
from metaloop.algorithms.reptile_rl import ReptileRL
from metaloop.errors import MetaloopError

#: CLI name → (class, one-line description).
ALGORITHMS: dict[str, tuple[type[MetaLearner], str]] = {
    "maml": (MAML, "MAML, second order (Finn et al. 2017)"),
    "fomaml": (FOMAML, "first-order MAML (Finn et al. 2017)"),
    "anil": (ANIL, "ANIL: inner loop on the head only (Raghu et al. 2020)"),
    "metasgd": (MetaSGD, "Meta-SGD: learned per-parameter inner rates (Li et al. 2017)"),
    "reptile": (Reptile, "Reptile: θ ← θ + ε·mean(φ − θ) (Nichol et al. 2018)"),
    "pretrain": (Pretrain, "baseline: multi-task pretraining, then fine-tuning (Finn et al. 2017)"),
    "protonet": (ProtoNet, "Prototypical Networks: nearest class mean in embedding space (Snell et al. 2017)"),
    "metaoptnet-svm": (MetaOptNetSVM, "MetaOptNet, Crammer-Singer SVM head (Lee et al. 2019)"),
    "metaoptnet-ridge": (MetaOptNetRidge, "MetaOptNet, ridge-regression head (Lee et al. 2019)"),
    "leo": (LEO, "LEO: optimization in a latent space of classifier weights (Rusu et al. 2019)"),
    "metaicl": (MetaICL, "MetaICL: a language model meta-trained to learn in context (Min et al. 2022)"),
    "maml-icl": (MAMLICL, "MAML-en-LLM: MAML over LoRA on in-context prompts (Sinha et al. 2024)"),
}

#: The algorithm whose inner loop is plain fine-tuning of an initialization that nothing meta-learned: the learner
#: of the untrained baselines (fine-tuning the pretrained LLM, training from scratch on the K examples).
FINETUNE = "pretrain"

#: The same names on a reinforcement-learning benchmark (one with an environment): CLI name → (class, description).
RL_ALGORITHMS: dict[str, tuple[type[MetaLearner], str]] = {
    "maml": (MAMLRL, "MAML-RL: policy-gradient inner step, meta-gradient through it (Finn et al. 2017)"),
    "fomaml": (FOMAMLRL, "first-order MAML-RL: the meta-gradient is the policy gradient after adaptation"),
    "anil": (ANILRL, "ANIL-RL: the inner step adapts only the policy's last layer (Raghu et al. 2020)"),
    "metasgd": (MetaSGDRL, "Meta-SGD-RL: per-parameter inner step sizes, meta-learned (Li et al. 2017)"),
    "reptile": (ReptileRL, "Reptile-RL: k policy-gradient steps, θ moves toward the adapted policies"),
    "promp": (ProMP, "ProMP: low-variance curvature inner step, PPO-clipped outer steps (Rothfuss et al. 2019)"),
    "pretrain": (PretrainRL, "baseline: one policy trained on all tasks, then fine-tuned (Finn et al. 2017)"),
}

#: Options that some algorithm reads and another may not (``seed`` is every run's): setting one that the chosen
#: algorithm does not read is an error (:func:`check_reads`).
ALGORITHM_OPTIONS = frozenset(name for table in (ALGORITHMS, RL_ALGORITHMS) for cls, _ in table.values()
                              for name in cls.reads) - {"seed"}


def registry(environment: bool = False) -> dict[str, tuple[type[MetaLearner], str]]:
    """The algorithms of a supervised benchmark, or (``environment``) those of a reinforcement-learning one."""
    return RL_ALGORITHMS if environment else ALGORITHMS


def algorithm(name: str, environment: bool = False) -> type[MetaLearner]:
    """The class of the algorithm named ``name`` on the command line (``environment``: on an RL benchmark)."""
    table = registry(environment)
    if name not in table:
        kind = "reinforcement-learning " if environment else ""
        raise MetaloopError(f"unknown {kind}algorithm '{name}' (known: {', '.join(table)})")
    return table[name][0]


def check_reads(name: str, keys: Iterable[str], source: str, environment: bool = False) -> None:
    """Refuse an option of ``keys`` (set by the user in ``source``) that algorithm ``name`` does not read."""
    cls = algorithm(name, environment)
    for key in keys:
        if key in ALGORITHM_OPTIONS and key not in cls.reads:
            readers = [n for n, (c, _) in ALGORITHMS.items() if key in c.reads]
            readers += [f"{n} on rl-* benchmarks" for n, (c, _) in RL_ALGORITHMS.items() if key in c.reads]
            which = f"'{name}' on a reinforcement-learning benchmark" if environment else f"'{name}'"
            raise MetaloopError(f"{source}: option '{key}': algorithm {which} does not read it (it is for "
                                f"{', '.join(readers)})")


__all__ = [
    "ALGORITHMS", "ALGORITHM_OPTIONS", "ANIL", "FINETUNE", "ANILRL", "FOMAML", "FOMAMLRL", "LEO", "MAML", "MAMLICL", "MAMLRL", "MetaICL",
    "MetaLearner", "MetaOptNet", "MetaOptNetRidge", "MetaOptNetSVM", "MetaSGD", "MetaSGDRL", "Pretrain",
    "PretrainRL", "ProMP", "ProtoNet", "RL_ALGORITHMS", "Reptile", "ReptileRL", "algorithm", "check_reads", "registry",
]
