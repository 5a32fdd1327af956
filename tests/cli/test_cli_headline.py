"""Which metrics ``modalab run`` prints: retrieval headlines, else the task's own scalars."""

from modalab.cli import headline_keys


def test_retrieval_headlines_first_and_counts_left_out() -> None:
    results = {"zeroshot_top1": 0.97, "val_zeroshot_top1": 0.98, "num_train": 1200,
               "wall_seconds": 60.0, "loss": 0.3}
    assert headline_keys(results) == ["zeroshot_top1"]


def test_task_without_retrieval_keys_prints_its_own_scalars() -> None:
    # audio_events reports tagging metrics only: the table used to come out empty
    results = {"tagging_mAP": 0.91, "val_tagging_mAP": 0.89, "frame_F1": 0.85, "onset_F1": 0.55,
               "num_train": 345, "wall_seconds": 50.0, "train_seconds": 40.0, "steps": 300,
               "eval_splits": ["val", "test"], "per_class": {"beep": 0.9}, "converged": True}
    assert headline_keys(results) == ["frame_F1", "onset_F1", "tagging_mAP"]
    assert len(headline_keys({f"m{i:02d}": float(i) for i in range(30)}, limit=5)) == 5
