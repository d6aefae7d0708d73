"""The DeepSpeed ZeRO backend's config rules, its memory in the planner, and which rank uploads which
checkpoint file (the runs themselves: tests/integration/test_trainer_deepspeed.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2v.config import ConfigError, load_config
from trainer.checkpoint import _written_by
from trainer.planner import plan_stage

DS = "t2v.parallel.data_parallel=deepspeed"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ([DS, "t2v.parallel.sequence_parallel=2"], "sequence_parallel"),
        ([DS, "t2v.parallel.zero_stage=3", "t2v.ema_decay=0.99", "t2v.nonfinite_policy=reload"], "ema_decay"),
        ([DS, "t2v.parallel.zero_stage=3", "t2v.nonfinite_policy=skip"], "nonfinite_policy"),
        ([DS, "t2v.parallel.zero_stage=4"], "zero_stage"),
        ([DS, "t2v.parallel.data_parallel_replicate=2"], "data_parallel_replicate"),
    ],
)
def test_what_the_deepspeed_backend_does_not_do_is_refused_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_config("tiny", ["t2v.parallel.sequence_parallel=1", *overrides])


def test_the_planner_shards_what_each_zero_stage_shards():
    base = ["t2v.parallel.sequence_parallel=1", DS, "t2v.nonfinite_policy=reload"]
    plans = {z: plan_stage(load_config("step-video-t2v-30b", [*base, f"t2v.parallel.zero_stage={z}"]), "t2v", gpus=64) for z in (1, 2, 3)}
    whole = 4 * 29_342_478_400
    assert plans[1].memory["parameters"] == whole and plans[1].memory["gradients"] == whole
    assert plans[1].memory["optimizer"] == 2 * whole // 64
    assert plans[2].memory["parameters"] == whole and plans[2].memory["gradients"] == whole // 64
    assert plans[3].memory["parameters"] == whole // 64 and "gathered" in plans[3].memory
    assert plans[1].total > plans[2].total > plans[3].total
    assert not plans[3].fits and "sequence_parallel needs data_parallel: fsdp" in plans[3].problems[0]


@pytest.mark.parametrize(
    "name, writer",
    [
        ("__1_0.distcp", 1),  # DCP's shard of rank 1
        (".metadata", 0),
        ("train.json", 0),
        ("mp_rank_00_model_states.pt", 0),  # DeepSpeed ZeRO 1/2: the weights, from rank 0
        ("zero_pp_rank_1_mp_rank_00_optim_states.pt", 1),
        ("bf16_zero_pp_rank_3_mp_rank_00_optim_states.pt", 3),
        ("zero_pp_rank_12_mp_rank_00_model_states.pt", 12),  # ZeRO-3: each rank's weight partition
    ],
)
def test_each_checkpoint_file_is_uploaded_by_exactly_the_rank_that_wrote_it(name, writer):
    assert [rank for rank in range(16) if _written_by(Path(name), rank)] == [writer]
    assert [rank for rank in range(16) if _written_by(Path("rng") / f"rank-{writer}.pt", rank)] == [writer]
