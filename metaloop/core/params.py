"""Parameter dicts and the choice of which parameters adapt in the inner loop."""

from __future__ import annotations

import fnmatch

from torch import Tensor, nn

from metaloop.errors import MetaloopError

ParamDict = dict[str, Tensor]


def head_names(module: nn.Module) -> list[str]:
    """Names of the parameters of the last submodule (in registration order) that owns parameters.

    For ``nn.Sequential(..., nn.Linear(64, 5))`` that is the final linear layer: the "head" that ANIL
    adapts (Raghu et al. 2020).
    """
    last: list[str] = []
    for prefix, sub in module.named_modules():
        own = [f"{prefix}.{n}" if prefix else n for n, _ in sub.named_parameters(recurse=False)]
        if own:
            last = own
    return last


def select_names(module: nn.Module, spec: str) -> list[str]:
    """Resolve an ``adapt`` spec to parameter names.

    ``spec`` is ``"all"``, ``"head"`` (see :func:`head_names`) or a comma-separated list of glob
    patterns matched against parameter names, for example ``"classifier.*,*.lora_*"``.
    """
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    if spec == "all":
        selected = names
    elif spec == "head":
        selected = head_names(module)
    else:
        patterns = [p.strip() for p in spec.split(",") if p.strip()]
        selected = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    if not selected:
        raise MetaloopError(f"option 'adapt': {spec!r} matches no parameter of the model")
    return selected
