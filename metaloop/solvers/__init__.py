"""Differentiable solvers that base learners call: ridge regression (:mod:`~metaloop.solvers.ridge`) and the
Crammer–Singer multi-class SVM (:mod:`~metaloop.solvers.crammer_singer`). They know nothing of meta-learning."""
