"""Raw CompCars (or manifest CSV) -> manifest -> validated -> splits -> crops store."""

from compcars_kedro.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
