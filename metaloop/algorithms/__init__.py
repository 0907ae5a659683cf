"""Meta-learning algorithms, each in its own file on the shared :class:`MetaLearner` base."""

from metaloop.algorithms.anil import ANIL
from metaloop.algorithms.base import MetaLearner
from metaloop.algorithms.leo import LEO
from metaloop.algorithms.maml import FOMAML, MAML
from metaloop.algorithms.metaicl import MetaICL
from metaloop.algorithms.metaoptnet import MetaOptNet
from metaloop.algorithms.metasgd import MetaSGD
from metaloop.algorithms.pretrain import Pretrain
from metaloop.algorithms.protonet import ProtoNet
from metaloop.algorithms.reptile import Reptile

#: CLI name → (class, one-line description).
ALGORITHMS: dict[str, tuple[type[MetaLearner], str]] = {
    "maml": (MAML, "MAML, second order (Finn et al. 2017)"),
    "fomaml": (FOMAML, "first-order MAML (Finn et al. 2017)"),
    "anil": (ANIL, "ANIL: inner loop on the head only (Raghu et al. 2020)"),
    "metasgd": (MetaSGD, "Meta-SGD: learned per-parameter inner rates (Li et al. 2017)"),
    "reptile": (Reptile, "Reptile: θ ← θ + ε·mean(φ − θ) (Nichol et al. 2018)"),
    "pretrain": (Pretrain, "baseline: multi-task pretraining, then fine-tuning (Finn et al. 2017)"),
    "protonet": (ProtoNet, "Prototypical Networks: nearest class mean in embedding space (Snell et al. 2017)"),
    "metaoptnet-svm": (MetaOptNet, "MetaOptNet, Crammer-Singer SVM head (Lee et al. 2019)"),
    "metaoptnet-ridge": (MetaOptNet, "MetaOptNet, ridge-regression head (Lee et al. 2019)"),
    "leo": (LEO, "LEO: optimization in a latent space of classifier weights (Rusu et al. 2019)"),
    "metaicl": (MetaICL, "MetaICL: a language model meta-trained to learn in context (Min et al. 2022)"),
}

__all__ = [
    "ALGORITHMS", "ANIL", "FOMAML", "LEO", "MAML", "MetaICL", "MetaLearner", "MetaOptNet", "MetaSGD", "Pretrain",
    "ProtoNet", "Reptile",
]
