"""How a run computes and where it keeps its artifacts: parameter groups that change neither what Algorithm 1
computes nor (except ``compute.amp``) its results, kept apart from :mod:`ferd.settings.config`'s method parameters."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..core.params_io import StrictModel as _Strict


class RetryConfig(_Strict):
    """botocore's retry handler (https://boto3.amazonaws.com/v1/documentation/api/latest/guide/retries.html)."""

    mode: Literal["standard", "adaptive"] = Field("standard", description="botocore retry mode: standard "
                                                  "(exponential backoff with jitter, capped at 20 s) or adaptive "
                                                  "(standard plus client-side rate limiting)")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per request, the first included")


class StorageConfig(_Strict):
    """Where stage artifacts and the pool are kept besides the local working copy (``ferd.core.storage``), and how
    every ``s3://`` object of a run is reached: artifacts, an ``s3://`` teacher, an ``s3://`` ``data_root``."""

    uri: str | None = Field(None, description="s3://bucket/prefix or a local directory: relative stage paths "
                            "are placed under it; None = the paths as given")
    endpoint_url: str | None = Field(None, pattern=r"^https?://", description="S3-compatible endpoint "
                                     "(MinIO, Ceph, moto); None = AWS or $AWS_ENDPOINT_URL")
    region: str | None = Field(None, description="S3 region; None = $AWS_DEFAULT_REGION or us-east-1")
    retries: RetryConfig = RetryConfig()
    connect_timeout: float = Field(5.0, gt=0, le=300, description="seconds to open a connection")
    read_timeout: float = Field(60.0, gt=0, le=3600, description="seconds to wait for a response")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        if uri is None or uri == "":
            return None
        if "://" in uri and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", uri):
            raise ValueError("expected s3://<bucket>[/prefix] or a local directory")
        if uri.startswith("s3://"):
            from ..core.storage import split_s3  # storage imports torch (checkpoints): not at parse time

            try:
                split_s3(uri)
            except ValueError:
                raise ValueError("expected s3://<bucket>[/prefix], the prefix taken literally: no '.', '..' or "
                                 "empty part, no ?, #, backslash or control character") from None
        return uri.rstrip("/")


class ContainerConfig(_Strict):
    """Run each of ``dvc.yaml``'s stages in ferd's image (``podman/docker run`` with the project mounted at its
    own path, as the calling user), for a workstation with a container engine but not ferd's Python
    environment (:func:`ferd.core.image.container_command`)."""

    engine: Literal["podman", "docker"] = Field("podman", description="the container engine's command")
    image: str = Field(description="the image, pinned by digest: REF@sha256:… (make image prints it)")

    @field_validator("image")
    @classmethod
    def _image(cls, ref: str) -> str:
        from ..core.image import pinned

        return pinned(ref, None)


class ComputeConfig(_Strict):
    """How synthesis and distillation compute (evaluation always runs fp32, contiguous)."""

    amp: Literal["fp32", "bf16"] = Field("fp32", description="bf16: torch.autocast(bfloat16) around the "
                                         "generator and student iterations (losses reduce in fp32); changes "
                                         "float results")
    fold_bn: bool = Field(False, description="fold the frozen teacher's BatchNorm into its convolutions for the "
                          "attack passes (UTAEs, reweighting PGD); equal outputs within float rounding")
    channels_last: bool = Field(False, description="NHWC weights for teacher, student and generator (GPU); "
                                "evaluation converts back")
    compile: bool = Field(False, description="torch.compile the student (in place) and the teacher's attack passes")
    compile_backend: str = Field("inductor", description="torch.compile backend (inductor; aot_eager for a quick "
                                 "check without code generation)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode (reduce-overhead: CUDA graphs)")
    pool_on_device: Literal["auto", "always", "never"] = Field(
        "auto", description="keep the pool tensors on the device during a distillation epoch (auto: on CUDA "
        "when they fit in half the free memory)")
