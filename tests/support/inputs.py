"""Inputs several test modules share: a ferd run of seconds on the embedded preset, and a YAML alias bomb."""

from __future__ import annotations

# overrides of params/embedded.yaml: two one-epoch rounds of tiny models (seconds on a CPU)
TINY = ["epochs=2", "rounds=2", "teacher.arch=cnn-4", "teacher.train.epochs=1", "teacher.train.pgd_steps=1",
        "student.arch=cnn-4", "synthesis.iterations=2", "synthesis.batch_size=16", "synthesis.generator.ngf=4",
        "synthesis.generator.nz=8", "synthesis.bottleneck.iterations=2", "synthesis.reweighting.pgd_steps=2",
        "distill.iterations=2", "distill.batch_size=16", "distill.utae.steps=1", "evaluation.n_examples=40",
        "evaluation.attacks=[clean,pgd20]"]

# nine levels of nine aliases: a few hundred bytes that a YAML loader with aliases expands to 9^9 items
BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" if i else "l0: &l0 [x, x, x, x, x, x, x, x, x]\n"
               for i in range(9))
