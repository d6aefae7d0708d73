"""LoRA with peft on the real trainer: only the adapters train, the export is peft's format, and an
adapter folder reads as its base with the adapter merged in -- equal to peft's own merge."""

from __future__ import annotations

import json

import pytest
import torch

from t2v import checkpoints
from tests.trainer_runs import make_job, run

LORA = ["t2i.lora.rank=4", "t2i.lora.alpha=8", "t2i.steps=6", "t2i.lr=1e-2"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A whole DiT checkpoint to adapt: six full steps from the seed."""
    folder = tmp_path_factory.mktemp("base")
    job = make_job(folder, ["t2i.steps=6"])
    run(job, 1)
    return folder / "checkpoint"


def _adapter_run(folder, base, nproc, extra=()):
    job = make_job(folder, [*LORA, *extra], init_checkpoint_uri=str(base))
    run(job, nproc)
    return job


@pytest.fixture(scope="module")
def one(tmp_path_factory, base):
    """One process, batch 4: the adapter the other tests read."""
    return _adapter_run(tmp_path_factory.mktemp("one"), base, 1, ["t2i.batch_size=4", "t2i.nproc_per_node=1"])


def test_only_the_adapters_train_and_the_export_is_peft_s_format(one, base):
    job = one
    result = json.loads((job.parent / "result.json").read_text())
    assert 0 < result["trainable_parameters"] < result["parameters"] / 5
    out = job.parent / "checkpoint"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "t2v_adapter.json"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["base_model_name_or_path"] == str(base)
    adapter = checkpoints.read_adapter(str(out))
    assert adapter.scale == 2.0
    assert len(adapter.pairs) == 7 * 3  # seven projections in each of the tiny DiT's three blocks
    # the B halves started at zero and trained: the adapter changes the network
    assert max(float(b.abs().max()) for _, b in adapter.pairs.values()) > 0
    # the losses moved (the adapter learned something): the first logged loss is not the last
    losses = [json.loads(line)["loss"] for line in (job.parent / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) >= 2 and losses[0] != losses[-1]


def test_an_adapter_reads_as_peft_merges_it_and_peft_loads_the_folder(one, base):
    from peft import PeftModel

    job = one
    out = str(job.parent / "checkpoint")
    merged_here = checkpoints.load_dit(out)
    plain = checkpoints.load_dit(str(base))
    by_peft = PeftModel.from_pretrained(plain, out).merge_and_unload()
    ours, theirs = merged_here.state_dict(), by_peft.state_dict()
    assert sorted(ours) == sorted(theirs)
    changed = [k for k in ours if not torch.equal(ours[k], checkpoints.load_dit(str(base)).state_dict()[k])]
    assert changed and all(k.endswith(".weight") for k in changed)
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)


def test_two_fsdp_ranks_train_the_same_adapter_as_one_process(tmp_path, base, one):
    # one process with batch 4 against two FSDP ranks with batch 2 each: the same global batches
    two = _adapter_run(tmp_path / "two", base, 2, ["t2i.batch_size=2", "t2i.nproc_per_node=2"])
    a = checkpoints.read_adapter(str(one.parent / "checkpoint")).pairs
    b = checkpoints.read_adapter(str(two.parent / "checkpoint")).pairs
    assert sorted(a) == sorted(b)
    for module in a:
        for x, y in zip(a[module], b[module]):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_a_stage_goes_on_training_an_adapter_over_the_same_base(tmp_path, base, one):
    first = one
    second = _adapter_run(tmp_path / "second", first.parent / "checkpoint", 1)
    lineage = json.loads((second.parent / "checkpoint" / "t2v_adapter.json").read_text())
    assert lineage["base_checkpoint_uri"] == str(base)  # not the first adapter: adapters do not stack
    a = checkpoints.read_adapter(str(first.parent / "checkpoint")).pairs
    b = checkpoints.read_adapter(str(second.parent / "checkpoint")).pairs
    assert any(not torch.equal(a[m][1], b[m][1]) for m in a)


def test_a_target_that_matches_nothing_is_refused_naming_it(tmp_path, base):
    job = make_job(tmp_path, [*LORA, "t2i.lora.target_modules=[to_q]"], init_checkpoint_uri=str(base))
    proc = run(job, 1, check=False)
    assert proc.returncode != 0 and "to_q" in proc.stderr and "match no linear layer" in proc.stderr


def test_the_merge_export_is_the_merged_network_in_the_released_layout(tmp_path, base, one):
    import subprocess
    import sys

    job = one
    out = tmp_path / "merged"
    result = subprocess.run([sys.executable, "-m", "t2v_cli", "model", "merge", str(job.parent / "checkpoint"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not checkpoints.is_adapter(str(out)) and (out / "diffusion_pytorch_model.safetensors").is_file()
    assert checkpoints.verify(str(out), "dit").ok
    merged, expected = checkpoints.load_dit(str(out)).state_dict(), checkpoints.load_dit(str(job.parent / "checkpoint")).state_dict()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    refused = subprocess.run([sys.executable, "-m", "t2v_cli", "model", "merge", str(base), "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "not a LoRA adapter folder" in refused.stderr and "Traceback" not in refused.stderr
