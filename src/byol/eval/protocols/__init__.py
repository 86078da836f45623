"""The evaluation protocols, by name (:mod:`byol.eval.protocols.registry`), each one module that runs on a
prepared :class:`~byol.eval.context.EvalContext`, writes its results card and returns what it measured:

- ``linear`` (:mod:`~byol.eval.protocols.linear`): :func:`run_linear`, L-BFGS logistic regression on frozen
  features (the paper's transfer linear protocol, App. D.2), and :func:`run_linear_sgd`, a linear layer
  trained with SGD on augmented crops (the ImageNet linear protocol, App. C.1);
- ``knn`` (:mod:`~byol.eval.protocols.knn`): :func:`run_knn`, weighted kNN on frozen features;
- ``finetune`` (:mod:`~byol.eval.protocols.finetune`): :func:`run_finetune`, fine-tuning on class-balanced
  label subsets with a supervised-from-scratch baseline (the semi-supervised protocol, Sec. 4.2 / App. C.2);
- ``transfer`` (:mod:`~byol.eval.protocols.transfer`): linear or fine-tuning on another data set;

and :func:`write_embedding` (:mod:`~byol.eval.protocols.embed`, ``byol embed``). Importing this package
registers the protocols above (a new one registers itself when its module is imported); none imports torch
before it runs.
"""

from byol.eval.protocols.registry import (
    PROTOCOLS,
    Outcome,
    Protocol,
    protocol,
    protocol_names,
    register,
)
from byol.eval.protocols.linear import run_linear, run_linear_sgd
from byol.eval.protocols.knn import run_knn
from byol.eval.protocols.finetune import run_finetune
from byol.eval.protocols import transfer  # noqa: F401 - registers ``transfer``
from byol.eval.protocols.embed import write_embedding

__all__ = ["PROTOCOLS", "Outcome", "Protocol", "protocol", "protocol_names", "register", "run_finetune", "run_knn",
           "run_linear", "run_linear_sgd", "write_embedding"]
