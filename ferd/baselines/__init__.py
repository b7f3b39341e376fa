"""The paper's baselines (§5.1, A.8): their characteristic loss terms (:mod:`.losses`).

Wiring each into a selectable ``method:`` with the robust-distillation conversion of A.8 (PGD
with step 2/255 and 10 iterations on the synthetic samples, RSLAD loss) is issue 9's remaining
work; the loss terms here are checked against hand computations (``tests/test_baseline_losses.py``).
"""
