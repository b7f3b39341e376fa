"""The ``pool_store`` component: stage 3 of the FERD DAG: append the round's FAE shard to the Parquet pool."""

from .component import pool_store

__all__ = ["pool_store"]
