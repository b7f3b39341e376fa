"""Datasets as [0, 1] float tensors, and the data-free guard.

Only teacher training and evaluation may load data; synthesis and distillation run inside
:func:`no_data_access` (FERD is data-free).
"""

from __future__ import annotations

from ..core.dataset_catalog import KNOWN_DATASETS, SPLITS, DatasetInfo, dataset_info
from .dataset_json import DatasetError, dataset_problems
from .datasets import load_split, require_split
from .guard import DataAccessError, check_data_access, data_access_blocked, no_data_access

__all__ = ["require_split", "KNOWN_DATASETS", "SPLITS", "DataAccessError", "DatasetError", "DatasetInfo",
           "check_data_access", "data_access_blocked", "dataset_info", "dataset_problems", "load_split", "no_data_access"]
