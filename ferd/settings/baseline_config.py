"""Parameters of the paper's baselines (``method:`` ≠ ``ferd``) and of their robust conversion (A.8).

Defaults are each reference's CIFAR-10 setting (``../shared/notes/baselines.md``), rescaled where
the reference works in normalised pixel space and FERD in [0, 1] (said per field). The synthesis
budget (``synthesis.iterations``, ``synthesis.batch_size``, ``epochs``) and the student budget
(``distill.iterations``, ``distill.batch_size``, optimiser, schedule) are shared with FERD, so a
comparison gives every method the same number of generator and student iterations.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from ..core.params_io import StrictModel

_Strict = StrictModel

# RSLAD's student loss (Zi et al. 2021), which A.8 applies to every baseline and ferd's default
# student side uses too: 1/6 on KL(f^T(x) ‖ f^S(x)), 5/6 on KL(f^T(x) ‖ f^S(x_adv)) — the reverse of
# FERD's printed Eq. 11 (λ1 = 5/6 clean, λ2 = 1/6 adversarial)
RSLAD_LAMBDA_CLEAN, RSLAD_LAMBDA_ADV = 1 / 6, 5 / 6
# RSLAD's inner maximisation starts from x + 0.001·N(0, 1)
RSLAD_RANDOM_START = "gaussian"


class RobustConversionConfig(_Strict):
    """A.8: PGD on the synthetic samples (step 2/255 = ``threat.step``, 10 iterations) and the RSLAD loss.

    The attack is RSLAD's inner maximisation (it attacks the student, in eval mode, from
    x + 0.001·N(0, 1), on KL(f^T(x) ‖ f^S(x'))); the loss is RSLAD's
    ``lambda_adv``·KL(f^T(x) ‖ f^S(x')) + ``lambda_clean``·KL(f^T(x) ‖ f^S(x)) (RSLAD: 5/6 and 1/6, the
    reverse of FERD's printed Eq. 11; ferd's default student side is this one too, so a baseline's own arm and
    FERD differ only in synthesis). Used by deepinv, cmi, fast and zskt; DFHL is robust by itself (HEEs).
    """

    attack_steps: int | None = Field(None, ge=1, description="PGD iterations on the synthetic samples; None = "
                                     "distill.utae.steps (default 10, A.8's), so every method's student makes as "
                                     "many attack steps per iteration as FERD's (equal budget)")
    random_start: Literal["gaussian", "uniform"] = Field(RSLAD_RANDOM_START, description="RSLAD: x + 0.001·N(0, 1)")
    lambda_adv: float = Field(RSLAD_LAMBDA_ADV, ge=0, description="RSLAD weight of KL(f^T(x) ‖ f^S(x_adv))")
    lambda_clean: float = Field(RSLAD_LAMBDA_CLEAN, ge=0, description="RSLAD weight of KL(f^T(x) ‖ f^S(x))")
    student_side: Literal["a8", "ferd"] = Field(
        "a8", description="a8: the conversion above; ferd: the baseline's pool distilled exactly as FERD's "
        "(distill.*: Eq. 10-11, UTAEs, λ1/λ2) — the comparison arm that separates synthesis from distillation")


class DeepInvConfig(_Strict):
    """DeepInversion (Yin et al. 2020) as zju-vipa ``datafree/synthesis/deepinversion.py`` runs it."""

    lambda_bn: float = Field(10.0, ge=0, description="datafree CIFAR-10: 10")
    lambda_oh: float = Field(1.0, ge=0)
    lambda_adv: float = Field(1.0, ge=0, description="weight of −JS (Adaptive DeepInversion)")
    lambda_tv: float = Field(0.0, ge=0, description="TV₁ (Fast-Datafree 0, CMI 1e-3)")
    lambda_l2: float = Field(0.0, ge=0)
    lr: float = Field(0.025, gt=0, description="Adam on the pixels; datafree's 0.1 is in normalised space "
                      "(std ≈ 0.25), i.e. ≈ 0.025 in [0, 1] pixels")
    jitter: int = Field(4, ge=0, description="random roll of ± jitter pixels per step (datafree: 4), plus a flip")


class CmiConfig(_Strict):
    """Contrastive model inversion (Fang et al. 2021), zju-vipa/CMI ``contrastive.py``."""

    lambda_bn: float = Field(1.0, ge=0)
    lambda_oh: float = Field(1.0, ge=0)
    lambda_adv: float = Field(0.5, ge=0, description="masked −KL(T‖S)")
    lambda_cr: float = Field(0.8, ge=0, description="contrastive term")
    temperature: float = Field(0.2, gt=0, description="τ of L_cr (CMI CIFAR-10: 0.2)")
    head_dim: int = Field(256, ge=1, description="output of the projection head h")
    bank_size: int = Field(40960, ge=1, description="FIFO memory bank rows (CMI: 40960)")
    bank_sample: int = Field(4096, ge=0, description="bank rows drawn per step (CMI: 4096)")
    lr: float = Field(1e-3, gt=0, description="Adam for the re-initialised G, z and h (CMI: 1e-3)")


class FastConfig(_Strict):
    """Fast DFKD (Fang et al. 2022), Fast-Datafree ``fast_meta.py`` (FOMAML meta-generator)."""

    lambda_bn: float = Field(10.0, ge=0)
    lambda_oh: float = Field(0.4, ge=0)
    lambda_adv: float = Field(1.1, ge=0, description="masked −KL(T‖S), off during ``adv_warmup`` epochs")
    bn_momentum: float = Field(0.9, ge=0, lt=1, description="bn_mmt of L_BN^mmt")
    lr: float = Field(2e-3, gt=0, description="Adam lr of the per-epoch clone (Fast: 2e-3 at 10 inner steps)")
    lr_z: float = Field(0.015, gt=0)
    meta_lr: float | None = Field(None, gt=0, description="Adam lr of the meta-generator; None = Fast's rule "
                                  "baseline.fast.lr × synthesis.iterations (Fast runs 2-10 inner steps; "
                                  "at the paper's 200 this is 0.4: set it lower)")
    adv_warmup: int = Field(0, ge=0, description="epochs with the adversarial term off (Fast: = warm-up, 20)")
    reset_l0_epoch: int | None = Field(None, ge=0, description="epoch at which the meta-G's first Linear/BN are "
                                       "re-initialised (Fast: 120 + warm-up); None = never")


class ZsktConfig(_Strict):
    """Zero-shot knowledge transfer (Micaelli & Storkey 2019), polo5 ``solver.py``."""

    lr: float = Field(1e-3, gt=0, description="Adam for the persistent generator (ZSKT: 1e-3)")
    grad_clip: float = Field(5.0, gt=0, description="gradient-norm clip on G (ZSKT: 5)")


class DfhlConfig(_Strict):
    """Data-free hard-label robustness stealing (Yuan et al. 2024), LetheSec/DFHL-RS-Attack."""

    confidence: float = Field(0.8, gt=0, lt=1, description="label smoothing of ỹ (DFHL: 0.8)")
    balance: float = Field(3.0, ge=0, description="weight of Σ p̄ log₁₀ p̄ (DFHL: 3)")
    lr: float = Field(2e-3, gt=0, description="Adam lr of the generator each epoch (DFHL: 2e-3)")
    lr_z: float = Field(0.01, gt=0)
    hee_steps: int = Field(10, ge=1, description="HEE ascent steps (DFHL: 10)")
    hee_step: float = Field(0.03, gt=0, description="HEE step size (DFHL: 0.03, no ε-ball)")


BASELINE_CONFIGS: dict[str, type[_Strict]] = {"deepinv": DeepInvConfig, "cmi": CmiConfig, "fast": FastConfig,
                                               "zskt": ZsktConfig, "dfhl": DfhlConfig}
"""Each baseline's parameters by its method name (its module in :mod:`ferd.baselines` registers the method of
the same name, which reads ``baseline.<name>``): a new baseline is that module plus its config class added here."""

BaselineConfig = create_model(
    "BaselineConfig", __base__=_Strict, __doc__="Used only when ``method`` is not ``ferd``: the A.8 conversion "
    "(``robust``) and one group per baseline, named by its method.",
    robust=(RobustConversionConfig, RobustConversionConfig()),
    **{name: (cls, cls()) for name, cls in BASELINE_CONFIGS.items()})
