"""Dataset-name helpers and the shared name lists."""

from compcars_kedro import names


def test_dataset_name_helpers() -> None:
    assert names.embeddings_name("baseline", "val") == "embeddings_baseline_val"
    assert names.embeddings_name("finetuned", "test", "v1") == "v1.embeddings_finetuned_test"
    assert names.checkpoint_name("finetuned") == "finetuned_checkpoint"
    assert names.embedding_names()[:3] == ["embeddings_baseline_val", "embeddings_baseline_test",
                                           "embeddings_baseline_unseen"]
    assert len(names.embedding_names()) == len(names.SOURCES) * len(names.EVAL_SPLITS)


def test_finetune_node_recognised_plain_and_namespaced() -> None:
    assert names.is_finetune_node("finetune")
    assert names.is_finetune_node("grid_a.finetune")
    assert not names.is_finetune_node("finetune_report")


def test_name_lists_are_consistent() -> None:
    assert set(names.EVAL_SPLITS) < set(names.SPLITS)
    assert set(names.REPORTED_SPLITS) < set(names.EVAL_SPLITS)
    assert set(names.SELECTION_MODES) < set(names.MODE_ORDER)
    assert len(set(names.REJECT_REASONS)) == len(names.REJECT_REASONS)
