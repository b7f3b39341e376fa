"""Kubeflow component of stage 3, FAE pool storage (:func:`ferd.stages.pool_store`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def pool_store(params_yaml: str, overrides: list, round_index: int, generation: Input[Artifact],
               pool: Output[Dataset], previous_pool: Input[Dataset] = None):
    """Append the round's FAE shard to the pool (Parquet partitioned by round; idempotent).

    ``previous_pool`` is the pool output of round ``round_index - 1`` (absent in round 0).
    """
    from ferd.stages import config_from_text, pool_store as store

    cfg = config_from_text(params_yaml, overrides)
    artifact = store(cfg, pool.path, round_index=round_index, synthesis=generation.path,
                     previous=previous_pool.path if previous_pool is not None else None)
    pool.metadata.update({"round": round_index, "rounds": artifact.rounds, "rows": artifact.rows,
                          "layout": "round=<r>/part-0.parquet"})
