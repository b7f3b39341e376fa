"""Synthesis: the generator, the losses of Eq. 4-9, reweighting (Eq. 1-2, 24-28) and one generation epoch.

Data-free: nothing here may read a dataset (``ferd.data`` is never imported; the run
wraps this stage in :func:`ferd.data.no_data_access`).
"""
