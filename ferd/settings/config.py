"""The typed parameters of a FERD run: one pydantic model per stage, validated before any work.

Defaults are the paper's (§5.1, Algorithm 1): T = 220 epochs, T_g = 200 generator and
T_s = 400 student iterations per epoch, batch 256, Adam(2e-3, β = (0.5, 0.999)) for the
generator, SGD(0.1, momentum 0.9, weight decay 5e-4) for the student, λ_adv = 1, λ_bn = 5,
λ_oh = 1, λ_uni = 5, ε = 8/255. Where the paper is silent the authors' code
(``../shared/notes/reference-code.md``) gives the value, and the field's description says so.
Where the printed reading measurably fails, the default is the variant that works and the field
says so (docs/results/student-defaults.md): the student side is RSLAD's (λ1 = 1/6 clean,
λ2 = 5/6 adversarial, γ = 0, 10 steps from 0.001·N(0, 1); paper λ1 = 5/6, λ2 = 1/6, γ = 0.5).
``params/paper-as-printed.yaml`` sets every printed value back; ``params/embedded.yaml`` is the
small CPU default.

Errors name the key and what it expects: ``synthesis.lambda_uni: expected a number >= 0, got -1``. Each field and
group is checked here; the rules that tie fields of different groups together (rounds and epochs, the processes and
the batches, mean/std and the dataset's channels, the UTAE cache and its target) are checked by the resolver,
:func:`ferd.plan.resolve.cross_field_errors`, which every entry point runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .baseline_config import RSLAD_LAMBDA_ADV, RSLAD_LAMBDA_CLEAN, RSLAD_RANDOM_START, BaselineConfig
from ..core.params_io import StrictModel
from .run_settings import ComputeConfig, ContainerConfig, StorageConfig


# sane upper bounds: far above any paper setting (220 epochs, 400 iterations, batch 512), low enough
# that a typo (epochs=2200000) is refused at once instead of running for years
MAX_EPOCHS, MAX_ITERATIONS, MAX_BATCH = 10_000, 100_000, 65_536


_Strict = StrictModel


PAPER_EPS = 8 / 255
PGD_STEPS = 20  # the evaluation's PGD-20 and CW∞ (ferd.attacks.standard); a step must let them cross ε


def standard_step(eps: float) -> float:
    """The PGD step for ``eps`` when none is given: ε/4 (2/255 at the paper's 8/255, exactly: a power-of-two scale)."""
    return eps / 4


class ThreatConfig(_Strict):
    """The L∞ threat model shared by teacher training, reweighting PGD, UTAEs and evaluation."""

    eps: float = Field(PAPER_EPS, gt=0, le=1, description="L∞ radius ε in [0,1] pixel units (paper: 8/255)")
    step: float = Field(2 / 255, gt=0, le=1, description="PGD step size α (paper/A.8: 2/255); not given with an ε "
                        "other than 8/255: ε/4, the same ratio")

    @model_validator(mode="before")
    @classmethod
    def _step_follows_eps(cls, data: object) -> object:
        """An ε other than 8/255 without a step takes ε/4: a fixed 2/255 would leave PGD-20 short of a larger ball
        (20 · 2/255 < 0.2) and let robust accuracy read high; ``ferd evaluate`` scales the same way
        (:func:`ferd.evaluation.runner.pgd_step_size`). A given step is kept (one below ε/20 is refused by
        :func:`ferd.plan.resolve.cross_field_errors`); ε ≈ 8/255 keeps 2/255 to the bit."""
        if isinstance(data, dict) and "step" not in data:
            eps = data.get("eps")
            if isinstance(eps, str):  # `-S threat.eps=1e-1`: YAML 1.1 reads it as text, pydantic as 0.1
                try:
                    eps = float(eps)
                except ValueError:
                    return data  # refused with the field's own message
            if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0 \
                    and abs(eps - PAPER_EPS) > 1e-9:
                return {**data, "step": standard_step(float(eps))}
        return data


class TeacherTrainConfig(_Strict):
    """PGD adversarial training (Madry et al.) of a teacher, used by ``train:<dataset>`` sources."""

    epochs: int = Field(15, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    pgd_steps: int = Field(5, ge=1, description="PGD steps of the inner maximisation (step 2.5·ε/steps)")
    augment: bool = Field(False, description="random crop (pad 4); no flip (digits are not flip-invariant)")


NORM_MEAN = ("per-channel mean {who} subtracts inside the model, (x - mean) / std on images in [0, 1]: what its "
             "weights were trained on, one value per image channel (3, digits too), e.g. CIFAR-10's [0.4914, 0.4822, "
             "0.4465]; given with std, or neither (None: no normalisation)")
NORM_STD = ("per-channel std {who} divides by inside the model: one finite value > 0 per image channel (3), e.g. "
            "CIFAR-10's [0.2471, 0.2435, 0.2616]; given with mean, or neither")


class TeacherConfig(_Strict):
    source: str = Field("train:digits", description="a checkpoint path, or train:<dataset> to train one")
    arch: str = "wrn-34-10"
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    allow_unverified_url: bool = Field(False, description="fetch an http(s):// source without teacher.sha256 "
                                       "(refused by default: anyone on the path could swap the weights)")
    mean: list[float] | None = Field(None, description=NORM_MEAN.format(who="the teacher"))
    std: list[float] | None = Field(None, description=NORM_STD.format(who="the teacher"))
    train: TeacherTrainConfig = TeacherTrainConfig()

    @property
    def remote(self) -> bool:
        """Fetched from elsewhere (``http(s)://``, ``s3://``, ``robustbench:``): no local file to check or to
        list as a DVC dependency, and a task cache key that sees the name, not the bytes behind it."""
        return self.source.startswith(("http://", "https://", "s3://", "robustbench:"))

    @property
    def local_file(self) -> str | None:
        """The checkpoint path when the source is a local file (neither remote nor ``train:``)."""
        return None if self.remote or self.source.startswith("train:") else self.source


class StudentConfig(_Strict):
    arch: str = "resnet18"
    mean: list[float] | None = Field(None, description=NORM_MEAN.format(who="the student"))
    std: list[float] | None = Field(None, description=NORM_STD.format(who="the student"))


class GeneratorConfig(_Strict):
    kind: Literal["reinit", "conditional", "conditional-reinit"] = Field(
        "reinit", description="reinit: the authors' code, an unconditional generator re-initialised every epoch "
        "with a learnable z (default: diverse pools); conditional: a persistent g(z, y) (Algorithm 1 as printed; "
        "collapses to ~one image per label); conditional-reinit: g(z, y) re-initialised every epoch with a "
        "learnable z")
    nz: int = Field(256, ge=1, description="latent size (Fast/CMI: 256)")
    ngf: int = Field(64, ge=1, description="generator width (Fast/CMI: 64)")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate η_g (paper 2e-3)")
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    lr_z: float = Field(0.015, gt=0, description="learning rate of z for the re-initialised kinds (authors' code)")


class BottleneckConfig(_Strict):
    """The information bottleneck of Eq. 4-6 that finds the non-robust channels."""

    mode: Literal["authors", "paper"] = Field(
        "authors", description="authors: a noise scale per sample and channel, ½·mean regulariser (default: with "
        "the own threshold it marks a subset of channels); paper: one per channel, Σ_c regulariser (its Σ over "
        "channels outweighs the cross-entropy, so σ² stays at v and the own threshold marks none)")
    iterations: int = Field(50, ge=1, le=MAX_ITERATIONS, description="Adam steps on λ_r (authors' code: 50)")
    lr: float = Field(0.1, gt=0, description="Adam lr for λ_r (authors' code: 0.1)")
    beta: float = Field(0.3, ge=0, description="β of Eq. 5 (authors' code: 0.3; the paper gives none)")
    threshold: Literal["global", "own"] = Field(
        "own", description="own: non-robust = σ_k² < ratio·v_k, σ² started at v (informative); global: Eq. 6 "
        "as printed, σ_k² < max v (marks ~every channel)")
    ratio: float = Field(0.5, gt=0, le=1, description="τ of the own threshold")


class ReweightConfig(_Strict):
    """Class reweighting (Eq. 1-2, A.6)."""

    enabled: bool = Field(True, description="off = the 'w/o reweighting' ablation: p stays uniform")
    strategy: Literal["softmax", "minmax", "power", "linear", "sigmoid", "tanh"] = Field(
        "softmax", description="softmax: Eq. 2 + softmax (paper); minmax: the authors' code; "
        "power/linear/sigmoid/tanh: A.6 Eq. 25-28 on the least PGD steps κ_c")
    temperature: float = Field(1.0, gt=0, description="softmax(D_c / T); the paper has T = 1")
    pgd_steps: int = Field(20, ge=1, description="PGD-20 (Eq. 1) and K of Eq. 24")
    samples: Literal["all", "correct"] = Field(
        "all", description="all: every kept sample (paper); correct: only those the teacher classifies correctly "
        "when clean (a wrong sample's margin measures the generator, not robustness)")
    min_weight: float = Field(0.05, gt=0, description="minmax strategy: lower end (authors: 0.05)")
    max_weight: float = Field(0.2, gt=0, description="minmax strategy: upper end (authors: 0.2)")
    beta: float = Field(2.0, gt=0, description="β of the power strategy (Eq. 25; A.6: 2)")
    lam: float = Field(0.0, description="λ of the sigmoid/tanh strategies (Eq. 27-28; A.6: 0)")

    @model_validator(mode="after")
    def _range(self) -> ReweightConfig:
        if self.min_weight >= self.max_weight:
            raise ValueError(f"min_weight must be < max_weight, got {self.min_weight} >= {self.max_weight}")
        return self


class SynthesisConfig(_Strict):
    """The generation stage of Algorithm 1 (lines 6-12)."""

    iterations: int = Field(200, ge=1, le=MAX_ITERATIONS, description="T_g generator iterations per epoch (paper 200)")
    batch_size: int = Field(256, ge=1, le=MAX_BATCH, description="synthetic batch per epoch (paper 256 / 512)")
    lambda_adv: float = Field(1.0, ge=0)
    lambda_bn: float = Field(5.0, ge=0)
    lambda_oh: float = Field(1.0, ge=0)
    lambda_uni: float = Field(5.0, ge=0)
    lambda_div: float = Field(0.0, ge=0, description="mode seeking within labels (not in the paper; "
                              "ferd.synthesis.losses.diversity_loss): keeps a conditional generator from "
                              "ignoring z")
    fae: bool = Field(True, description="off = the 'w/o FAEs' ablation: no L_uni")
    layer: str | None = Field(None, description="layer l of Eq. 4-7 (None: the last conv block, §5.1)")
    generator: GeneratorConfig = GeneratorConfig()
    bottleneck: BottleneckConfig = BottleneckConfig()
    reweighting: ReweightConfig = ReweightConfig()


class UTAEConfig(_Strict):
    """Uniform-target adversarial examples (Eq. 10)."""

    enabled: bool = Field(True, description="off = the 'w/o UTAEs' ablation: γ = 0, plain PGD on the KL")
    target: Literal["teacher", "student"] = Field(
        "student", description="student: the authors' code (RSLAD's inner max; default: Eq. 10 as printed gives no "
        "robust student, docs/methods.md); teacher: Eq. 10 as printed")
    steps: int = Field(10, ge=1, description="attack steps (authors' code / A.8: 10; the baselines' A.8 "
                       "conversion follows this budget)")
    gamma: float = Field(0.0, ge=0, description="γ of Eq. 10 (paper 0.5; default 0, as the authors' code, which "
                         "comments the uniform term out: with it the UTAE is RSLAD's inner maximisation; "
                         "docs/methods.md)")
    random_start: Literal["uniform", "gaussian"] = Field(
        RSLAD_RANDOM_START, description="gaussian: 0.001·N(0, 1) (authors' code, RSLAD; default); uniform: U[-ε, ε] "
        "(PGD; the paper does not say)")
    cache: Literal["recompute", "pool"] = Field(
        "recompute", description="pool: compute each FAE's UTAEs once, when it enters the pool, and store them "
        "with it (valid only when UTAEs attack the teacher); recompute: a fresh UTAE every student iteration")
    cache_starts: int = Field(1, ge=1, le=16, description="K cached UTAEs per FAE (K random starts); a student "
                              "iteration picks one of the K at random")

class DistillConfig(_Strict):
    """The robust distillation stage of Algorithm 1 (lines 13-17)."""

    iterations: int = Field(400, ge=1, le=MAX_ITERATIONS, description="T_s student iterations per epoch (paper 400)")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.1, gt=0, description="SGD learning rate η_s (paper 0.1)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine annealing to 0 over all student iterations (authors' code: cosine)")
    warmup_epochs: int = Field(0, ge=0, description="generator-only epochs before the student trains "
                               "(authors' code and Fast: 20; the paper: none)")
    augment: bool = Field(True, description="random crop (pad 4) and, where the dataset is flip-invariant, "
                          "flip of every pool batch before teacher and student (Fast, RSLAD, authors' code; "
                          "the paper is silent)")
    lambda1: float = Field(RSLAD_LAMBDA_CLEAN, ge=0, description="λ1 of Eq. 11, on the clean term (paper 5/6; "
                           "default RSLAD's 1/6: on CIFAR-10 the paper's weights halve the student's PGD-20, "
                           "docs/methods.md)")
    lambda2: float = Field(RSLAD_LAMBDA_ADV, ge=0, description="λ2 of Eq. 11, on the UTAE term (paper 1/6; default "
                           "RSLAD's 5/6)")
    utae: UTAEConfig = UTAEConfig()


class EvalConfig(_Strict):
    attacks: list[str] = Field(["clean", "pgd20"], description="registered attacks (ferd.attacks.ATTACKS): clean, "
                               "fgsm, pgd20, cw, aa")
    n_examples: int | None = Field(None, ge=1, description="a stratified subset of the test split; None = all")
    aa_examples: int | None = Field(None, ge=1, description="AutoAttack on a smaller stratified subset (its own "
                                    "eval-aa/ folder; the other attacks keep n_examples); None = the same examples")
    batch_size: int = Field(256, ge=1)

    @property
    def aa_on_own_subset(self) -> bool:
        """AutoAttack runs on its own smaller subset (into ``eval-aa/``): ``aa`` is evaluated and
        ``aa_examples`` is below the examples the other attacks see."""
        return "aa" in self.attacks and self.aa_examples is not None and (
            self.n_examples is None or self.aa_examples < self.n_examples)


class FerdConfig(_Strict):
    # any registered method (ferd.settings.method), checked by ferd.plan.resolve.resolve
    method: str = Field("ferd", pattern=r"^[a-z][a-z0-9_-]{0,39}$", description="ferd (this paper), or a baseline "
                        "of §5.1 made robust as A.8 says: deepinv, cmi, fast, zskt, dfhl (parameters in the baseline "
                        "group)")
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    nproc_per_node: int = Field(1, ge=1, le=64, description="processes for the data-parallel stages (synthesis "
                                "and distillation, and ferd run / ferd stage all): above 1 the command starts itself under "
                                "torchrun --standalone --nproc_per_node N (ferd.compute.distributed); how, not what")
    dataset: str = Field("cifar10", description="the task: sets num_classes; read only to train the "
                         "teacher and to evaluate")
    data_root: str | None = None
    epochs: int = Field(220, ge=1, le=MAX_EPOCHS, description="T of Algorithm 1 (paper 220)")
    rounds: int | None = Field(None, ge=1, le=MAX_EPOCHS,
                               description="rounds of synthesis → pool → distillation the epochs "
                               "are grouped in (None = epochs: exactly Algorithm 1)")
    checkpoint_every: int = Field(1, ge=1, description="rounds between resumable checkpoints")
    threat: ThreatConfig = ThreatConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    distill: DistillConfig = DistillConfig()
    evaluation: EvalConfig = EvalConfig()
    compute: ComputeConfig = ComputeConfig()
    storage: StorageConfig = StorageConfig()
    container: ContainerConfig | None = Field(None, description="dvc.yaml's stages run in this image: {engine: "
                                              "podman|docker, image: REF@sha256:…}; None = in this environment; "
                                              "how, not what")
    baseline: BaselineConfig = BaselineConfig()

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"expected 'cpu' or 'cuda[:N]', got {device!r}")
        return device

    @property
    def num_rounds(self) -> int:
        """R: the rounds the epochs are grouped in (``rounds``, or ``epochs`` when unset: Algorithm 1)."""
        return self.rounds or self.epochs

    @property
    def round_schedule(self) -> list[range]:
        """The epochs of each round (:func:`round_epochs`)."""
        return round_epochs(self.epochs, self.num_rounds)

    @property
    def num_classes(self) -> int:
        from ..core.dataset_catalog import dataset_info

        return dataset_info(self.dataset).num_classes


def round_epochs(epochs: int, rounds: int) -> list[range]:
    """Split epochs 0..T-1 into ``rounds`` contiguous ranges, as evenly as possible (earlier rounds longer)."""
    if not 1 <= rounds <= epochs:
        raise ValueError(f"rounds: expected an integer in [1, epochs={epochs}], got {rounds}")
    base, extra = divmod(epochs, rounds)
    out, start = [], 0
    for r in range(rounds):
        n = base + (1 if r < extra else 0)
        out.append(range(start, start + n))
        start += n
    return out
