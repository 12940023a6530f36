"""data_engineering pipeline."""

from kedro.pipeline import Pipeline, node

from compcars_kedro.pipelines.data_engineering.nodes import (
    crop_images,
    parse_raw,
    split_dataset,
    validate_images,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(parse_raw, ["compcars_raw", "params:data_engineering"], "manifest", name="parse_raw"),
        node(validate_images, ["manifest", "compcars_raw", "params:data_engineering"],
             ["validated_images", "rejected_images", "image_hashes"], name="validate_images"),
        node(split_dataset, ["validated_images", "params:data_engineering", "image_hashes"],
             ["image_splits", "multiview_samples", "excluded_images", "split_summary"],
             name="split_dataset"),
        node(crop_images, ["image_splits", "compcars_raw", "params:data_engineering"],
             "crops", name="crop_images"),
    ], tags=["data_engineering"])
