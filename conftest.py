"""Loaded by pytest before any other conftest (tests/, components/) and before torch: the CPU kernels
every test runs with.

The golden fingerprints (tests/support/golden.py) are float results, and torch's and oneDNN's AVX-512 kernels
sum in another order than their AVX2 ones: both are pinned to AVX2 so that the bytes are the same on
every x86-64 machine CI may run on (measured: an AVX-512 machine gives other bytes unpinned, the
recorded ones pinned). Child processes (ferd, dvc, torchrun) inherit it.
"""

import os

os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
