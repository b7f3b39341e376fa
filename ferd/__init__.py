"""ferd: Fairness-Enhanced data-free adversarial Robustness Distillation (FERD).

The library behind ``ferd run``, the DVC stages and the Kubeflow components.
Paper: "FERD: Fairness-Enhanced Data-Free Adversarial Robustness Distillation"
(``../shared/paper/FERD.txt``); equations are cited by their number there.
"""

__version__ = "0.1.0"
