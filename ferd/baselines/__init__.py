"""The paper's baselines (§5.1, A.8) as ``method:`` choices, one module each.

* :mod:`.losses` — each baseline's characteristic loss terms (hand-checked in
  ``tests/unit/test_baseline_losses.py``);
* :mod:`.generation` — their generation: one module per baseline subclasses :class:`.generation.BaselineMethod` and
  registers it in :data:`ferd.settings.method.METHODS`; the one generation loop
  (:class:`ferd.synthesis.epoch.Synthesizer`) runs any of them, and FERD;
* their distillation (:func:`ferd.plan.resolve.resolve`): deepinv, cmi, fast and zskt are made robust as A.8 says
  (PGD, step 2/255, 10 iterations on the synthetic samples, RSLAD loss); dfhl keeps its own robust
  distillation (high-entropy examples labelled by the teacher's top-1, :class:`.dfhl.HeeSide`);
* their parameters: :mod:`ferd.settings.baseline_config` (``baseline:`` group).

Importing this package registers every baseline module in it (no list to keep).
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
