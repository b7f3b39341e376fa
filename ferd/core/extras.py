"""Optional dependencies: which extra of ``pip install 'ferd[...]'`` brings a module the core does not.

The core (``ferd run``, the stages, the evaluation) needs none of them; a command that does names the
extra in one line (:func:`ferd.cli.main`) instead of a traceback.
"""

from __future__ import annotations

EXTRA_OF = {  # top-level module → the extra that installs it (pyproject.toml)
    "boto3": "s3", "botocore": "s3", "s3transfer": "s3",
    "dvc": "dvc",
    "kfp": "kfp", "kubeflow": "kfp", "kubernetes": "kfp", "docker": "kfp",
    "onnx": "onnx", "onnxscript": "onnx", "onnx_ir": "onnx",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra that provides the module ``exc`` could not import, or None when no extra does
    (a broken installation, not a missing extra)."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return f"needs the optional dependency {top!r}: pip install 'ferd[{extra}]'"
