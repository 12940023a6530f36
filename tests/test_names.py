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


def test_grid_and_study_names() -> None:
    from compcars_kedro.grid import Variant

    assert names.split_namespace(5) == "split_ss5"
    assert Variant("resnet18", "arcface", "front", 0, split_seed=5).split_namespace == "split_ss5"
    assert names.study_table("grid", "status") == "grid_status"
    assert names.FINETUNE_CHECKPOINTS == ("baseline_checkpoint", "finetuned_checkpoint",
                                          "last_checkpoint")
    assert (names.INTERNAL, names.TRANSFER, names.ORACLE) == ("internal", "transfer", "oracle")


def test_pipelines_use_the_names() -> None:
    """The finetune node is recognised by the hook's rule, and writes the listed checkpoints."""
    from compcars_kedro.pipelines.embeddings import create_pipeline as embeddings
    from compcars_kedro.pipelines.finetuning import create_pipeline as finetuning

    train = [n for n in finetuning().nodes if names.is_finetune_node(n.name)]
    assert len(train) == 1 and train[0].outputs[:3] == list(names.FINETUNE_CHECKPOINTS)
    assert set(names.embedding_names()) <= set(embeddings().all_outputs())
