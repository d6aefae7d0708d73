"""The training loop in one process (no torchrun): gradient accumulation, the non-finite guard's
policies, EMA export, the lr schedule as logged, and a resumed run when the stage is already done."""

from __future__ import annotations

import json
import math

import pytest
import torch

from t2v.errors import StageError
from tests.trainer_runs import make_job
from trainer.train import Trainer


def _trainer(tmp_path, *overrides, latents=None) -> Trainer:
    job = make_job(tmp_path, ["t2i.nproc_per_node=1", "t2i.steps=6", *overrides], latents=latents)
    return Trainer(json.loads(job.read_text()))


def _records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_two_accumulated_micro_batches_equal_one_batch_of_twice_the_size(tmp_path):
    whole = _trainer(tmp_path / "whole", "t2i.batch_size=4")
    whole.train()
    accumulated = _trainer(tmp_path / "accum", "t2i.batch_size=2", "t2i.grad_accum_steps=2",
                           latents=json.loads((tmp_path / "whole" / "job.json").read_text())["latents"])
    accumulated.train()
    for a, b in zip(_records(tmp_path / "whole"), _records(tmp_path / "accum")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def _poison(trainer: Trainer, at_step: int):
    """The first time the run reaches ``at_step``, its loss is NaN (a bad batch)."""
    real = trainer.objective
    done = []

    def objective(model, batch):
        out = real(model, batch)
        if trainer.step == at_step and not done:
            done.append(True)
            out.per_sample = out.per_sample * float("nan")
        return out

    trainer.objective = objective


def test_a_non_finite_step_is_skipped_and_training_goes_on(tmp_path):
    trainer = _trainer(tmp_path, "t2i.batch_size=2", "t2i.nonfinite_policy=skip")
    _poison(trainer, 3)
    weights: dict[tuple[int, str], dict] = {}
    real_step = trainer.train_step

    def watch(metrics):
        snapshot = lambda: {n: p.detach().clone() for n, p in trainer.dit.named_parameters()}  # noqa: E731
        weights[trainer.step, "before"] = snapshot()
        real_step(metrics)
        weights[trainer.step, "after"] = snapshot()

    trainer.train_step = watch
    trainer.train()
    records = _records(tmp_path)
    assert math.isnan(records[2]["loss"]) and all(math.isfinite(r["loss"]) for r in records if r["step"] != 3)
    unchanged = lambda step: all(torch.equal(weights[step, "before"][n], weights[step, "after"][n]) for n in weights[step, "after"])  # noqa: E731
    assert unchanged(3) and not unchanged(4)  # the poisoned step's update was skipped, the next one applied
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 6


def test_the_fail_policy_stops_the_run_naming_the_step(tmp_path):
    trainer = _trainer(tmp_path, "t2i.batch_size=2", "t2i.nonfinite_policy=fail")
    _poison(trainer, 2)
    with pytest.raises(StageError, match="step 2: loss nan .* not finite"):
        trainer.train()


def test_the_reload_policy_goes_back_to_the_last_checkpoint_and_on_with_new_batches(tmp_path):
    trainer = _trainer(tmp_path, "t2i.batch_size=2", "t2i.nonfinite_policy=reload", "t2i.checkpoint.every_steps=2")
    _poison(trainer, 4)
    trainer.train()
    steps = [r["step"] for r in _records(tmp_path)]
    assert steps == [1, 2, 3, 4, 3, 4, 5, 6]  # back to step-2's state after the bad step 4


def test_ema_weights_are_exported_and_differ_from_the_raw_weights(tmp_path):
    from t2v import checkpoints

    trainer = _trainer(tmp_path, "t2i.batch_size=2", "t2i.ema_decay=0.5")
    trainer.train()
    exported = checkpoints.load_state_dict(str(tmp_path / "checkpoint"), checkpoints.DIT_WEIGHTS)
    raw = {n: p.detach() for n, p in trainer.dit.named_parameters()}
    ema = trainer.ema.state_dict()
    name = "transformer_blocks.0.attn1.wqkv.weight"
    assert torch.equal(exported[name], ema[name]) and not torch.equal(exported[name], raw[name])
    assert json.loads((tmp_path / "checkpoint" / "training_state.json").read_text())["ema"] is True


def test_the_cosine_schedule_is_what_the_run_logs(tmp_path):
    from trainer.optim import lr_factor

    trainer = _trainer(tmp_path, "t2i.batch_size=2", "t2i.lr_schedule=cosine", "t2i.min_lr_ratio=0.1")
    trainer.train()
    for record in _records(tmp_path):
        assert record["lr"] == pytest.approx(trainer.cfg.lr * lr_factor(record["step"], trainer.cfg))


def test_a_finished_stage_run_again_only_exports(tmp_path):
    _trainer(tmp_path, "t2i.batch_size=2").train()
    lines = len(_records(tmp_path))
    again = _trainer(tmp_path, "t2i.batch_size=2", latents=json.loads((tmp_path / "job.json").read_text())["latents"])
    result = again.train()
    assert again.step == 6 and len(_records(tmp_path)) == lines  # resumed at the end: no step re-run
    assert result["steps"] == 6


@pytest.mark.slow
def test_torch_compile_per_block_gives_the_same_losses_and_released_names(tmp_path):
    from safetensors import safe_open

    plain = _trainer(tmp_path / "plain", "t2i.batch_size=2", "t2i.steps=2")
    plain.train()
    compiled = _trainer(tmp_path / "compiled", "t2i.batch_size=2", "t2i.steps=2", "t2i.parallel.compile=true",
                        latents=json.loads((tmp_path / "plain" / "job.json").read_text())["latents"])
    compiled.train()
    for a, b in zip(_records(tmp_path / "plain"), _records(tmp_path / "compiled")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    with safe_open(str(tmp_path / "compiled" / "checkpoint" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert names == {n for n, _ in plain.dit.named_parameters()}
