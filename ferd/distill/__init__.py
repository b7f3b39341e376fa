"""Robust distillation: UTAEs (Eq. 10), the student loss (Eq. 11) and one distillation epoch.

Data-free: nothing here may read a dataset; the student only ever sees the FAE pool.
"""
