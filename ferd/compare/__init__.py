"""FERD against the paper's baselines and ablations (issue: comparison), ``ferd compare``.

:mod:`.config` reads a preset (``params/compare-*.yaml``), :mod:`.runner` runs its arms with a
shared teacher, :mod:`.report` writes the Table-1-style comparison with paired 95 % intervals.
"""
