"""The Kubeflow front door: the DAG (:mod:`.dag`, :mod:`.compare_dag`), local runs (:mod:`.local`) and
submission (:mod:`.submit`); needs the ``kfp`` extra. Importing this package imports nothing else."""

from pathlib import Path

DEFAULT_CLUSTER = Path(__file__).resolve().parent / "cluster.yaml"  # package data; --cluster FILE for your own
