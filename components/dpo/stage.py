"""dpo: Video-DPO after t2v, from the t2v checkpoint or any DiT checkpoint (``dpo.init_from``, the
released weights included).

Each round (``dpo.rounds``, on-policy):

1. **sample**: ``samples_per_prompt`` (K) videos for each of ``num_prompts`` training prompts from the
   current policy, candidate k of round r with the noise of seed ``seed + 1000 r + k`` (the sampler's
   steps, guidance and shift recorded with them); the prompts are captions of the latent set, drawn by a
   seeded permutation, with their text states from the encode stage;
2. **score** each video with ``dpo.reward`` (:mod:`t2v.rewards`: the world checker, or a CLIP model);
3. **pair**: per prompt, the best candidate against the worst, when their rewards differ by at least
   ``pair_margin``, and with ``pairs_per_prompt`` above 1 the second best against the second worst and
   so on (:func:`preference_pairs`): more pairs from the same sampling;
4. **train**: the pairs' clean latents are written as a latent set (``video`` the preferred,
   ``rejected`` the rejected, the prompt's text states) and the distributed trainer runs the ``dpo``
   stage on them with :class:`trainer.objectives.FlowMatchingDPO`, against the round's starting weights
   as the frozen reference.

The next round samples with the updated policy and takes it as its reference. After the last round the
final policy is sampled again with round 0's seeds and scored, so the stage reports the reward before
and after DPO on the same prompts and noise. With no ``dpo`` section in the profile the stage publishes
its input checkpoint unchanged.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.framework.skeleton import Stage, StageOutput, StageRun
from components.framework.training import run_trainer
from t2v import checkpoints, storage, tracking
from t2v.errors import StageError
from t2v.progress import Progress
from t2v.shards import (
    LATENT_INDEX,
    IndexedLatents,
    index_latent_shards,
    load_negative,
    npy_bytes,
    write_index_and_negative,
    write_shards,
)

log = logging.getLogger(__name__)
STAGE = "dpo"
ROUND_SEED_STRIDE = 1000
TEXT_KEYS = ("llm_states", "llm_mask", "clip_states", "clip_mask")


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return {"dpo": ctx.config.section("dpo") if ctx.config.dpo is not None else None}


def preference_pairs(rewards: np.ndarray, margin: float, per_prompt: int = 1) -> list[tuple[int, int, int]]:
    """(prompt, preferred candidate, rejected candidate) of a [prompts, K] reward table. Per prompt, the
    candidates ranked by reward (equals in candidate order) are paired from the outside in: the best
    against the worst, then the second best against the second worst, ``per_prompt`` pairs at most; each
    pair is kept when its gap is at least ``margin`` (and above 0). No candidate is in two pairs."""
    pairs = []
    for prompt, row in enumerate(np.asarray(rewards, dtype=np.float64)):
        index = np.arange(len(row))
        best_first = np.lexsort((index, -row))  # descending reward, the first of equals first
        worst_first = np.lexsort((index, row))  # ascending reward, the first of equals first
        used: set[int] = set()
        for best, worst in zip(best_first[:per_prompt], worst_first[:per_prompt]):
            best, worst = int(best), int(worst)
            if best in used or worst in used:
                continue
            if row[best] - row[worst] >= margin and row[best] > row[worst]:
                pairs.append((prompt, best, worst))
                used.update((best, worst))
    return pairs


def training_prompts(latents: dict[str, Any], count: int, seed: int):
    """``count`` latent samples with distinct captions, in a seeded order: the prompts' text states and
    metadata (scene specs for the checker) come from the encode stage."""
    indexed = IndexedLatents.from_manifest(latents)
    if indexed is None:
        raise StageError("dpo: the latent set has no index (re-run encode)")
    order = np.random.default_rng(seed).permutation(len(indexed))
    picked, captions = [], set()
    for index in order:
        sample = indexed[int(index)]
        caption = sample.meta.get("caption", "")
        if caption in captions:
            continue
        captions.add(caption)
        picked.append(sample)
        if len(picked) == count:
            break
    return picked


def _text(samples) -> dict[str, np.ndarray]:
    return {k: np.stack([getattr(s, k) for s in samples]) for k in TEXT_KEYS}


def sample_candidates(dit, vae, prompts, negative, latent_shape, cfg, seeds: list[int], label: str):
    """K candidates per prompt: latents [P, K, F, C, h, w] and videos [P][K] (uint8 [T, H, W, 3])."""
    import torch

    from t2v.generate import decode_videos, sample_latents

    text = _text(prompts)
    negative_batch = {k: v[None] for k, v in negative.items()}
    progress = Progress(label, len(seeds))
    latents, videos = [], []
    for k, seed in enumerate(seeds):
        z = sample_latents(dit, text, negative_batch, latent_shape, cfg.sample_steps, cfg.guidance_scale, cfg.shift, seed)
        latents.append(z)
        videos.append(decode_videos(vae, z))
        progress.update(k + 1)
    stacked = torch.stack(latents, dim=1)  # [P, K, ...]
    return stacked, [[videos[k][p] for k in range(len(seeds))] for p in range(len(prompts))]


def score_candidates(reward, prompts, videos) -> np.ndarray:
    """[prompts, K] rewards."""
    rows = []
    for sample, row in zip(prompts, videos, strict=True):
        caption = sample.meta.get("caption", "")
        rows.append(reward(row, [caption] * len(row), [sample.meta] * len(row)))
    return np.asarray(rows, dtype=np.float64)


@dataclass
class PreferencePair:
    preferred: np.ndarray  # clean latents [F, C, h, w]
    rejected: np.ndarray
    text: dict[str, np.ndarray]  # llm_states, llm_mask, clip_states, clip_mask of the prompt
    meta: dict[str, Any]


def pairs_from_candidates(indices, latents, prompts, rewards) -> list[PreferencePair]:
    out = []
    for p, w, lose in indices:
        sample = prompts[p]
        out.append(PreferencePair(
            latents[p, w].float().numpy(), latents[p, lose].float().numpy(),
            {k: getattr(sample, k) for k in TEXT_KEYS},
            {"caption": sample.meta.get("caption", ""), "prompt_key": sample.key, "preferred": w, "rejected": lose,
             "reward_preferred": float(rewards[p, w]), "reward_rejected": float(rewards[p, lose])},
        ))
    return out


def write_pair_set(pairs: list[PreferencePair], negative: dict[str, np.ndarray], folder: str) -> dict[str, Any]:
    """The pairs as a latent set the trainer reads (shards, index, negative): ``video`` the preferred
    latents, ``rejected`` the rejected ones. Returns its manifest."""
    records = [{
        "__key__": f"pair-{n:06d}",
        "video.npy": npy_bytes(pair.preferred),
        "image.npy": npy_bytes(pair.preferred[:1]),
        "rejected.npy": npy_bytes(pair.rejected),
        **{f"{k}.npy": npy_bytes(pair.text[k]) for k in TEXT_KEYS},
        "json": json.dumps(pair.meta).encode(),
    } for n, pair in enumerate(pairs)]
    with tempfile.TemporaryDirectory(prefix="t2v-dpo-pairs-") as tmp_name:
        tmp = Path(tmp_name)
        paths = write_shards(records, tmp / "shards", "pairs", 256)
        files = storage.upload_files(tmp, [str(p.relative_to(tmp)) for p in paths], folder)
        files.update(write_index_and_negative(index_latent_shards(paths), negative, folder))
    return {
        "stage": "dpo-pairs",
        "manifest_uri": storage.join(folder, "pairs"),
        "files": files,
        "index_uri": storage.join(folder, LATENT_INDEX),
        "negative_uri": storage.join(folder, "negative.npz"),
        "summary": {"samples": len(records)},
    }


def write_labelling_sheet(latents, videos, prompts, rewards: np.ndarray | None, folder: str, fps: int) -> str:
    """A sheet for human raters (:mod:`t2v.preferences`) of a round's candidates: per prompt, candidates
    (0, 1), (2, 3), ... side by side, with the automatic reward's choice as ``suggested``, and the pairs'
    latents and text states (``pairs.npz``) so the filled labels can be trained on. Returns its URI."""
    from t2v.preferences import SheetPair, write_sheet
    from t2v.video import write_mp4

    arrays: dict[str, list[np.ndarray]] = {"latents_a": [], "latents_b": [], **{k: [] for k in TEXT_KEYS}}
    sheet_pairs, ids, captions = [], [], []
    with tempfile.TemporaryDirectory(prefix="t2v-dpo-sheet-") as tmp_name:
        tmp = Path(tmp_name)
        for p, sample in enumerate(prompts):
            caption = sample.meta.get("caption", "")
            for a in range(0, latents.shape[1] - 1, 2):
                b = a + 1
                pair_id = f"p{p:03d}-c{a}-c{b}"
                for side, k in (("a", a), ("b", b)):
                    write_mp4(tmp / "videos" / f"{pair_id}-{side}.mp4", videos[p][k], fps=fps)
                suggested = ""
                if rewards is not None:
                    suggested = "a" if rewards[p, a] > rewards[p, b] else "b" if rewards[p, b] > rewards[p, a] else "tie"
                sheet_pairs.append(SheetPair(pair_id, caption, f"videos/{pair_id}-a.mp4", f"videos/{pair_id}-b.mp4", suggested))
                arrays["latents_a"].append(latents[p, a].float().numpy())
                arrays["latents_b"].append(latents[p, b].float().numpy())
                for key in TEXT_KEYS:
                    arrays[key].append(getattr(sample, key))
                ids.append(pair_id)
                captions.append(caption)
        write_sheet(tmp, sheet_pairs)
        np.savez(tmp / "pairs.npz", pair_ids=np.array(ids), captions=np.array(captions),
                 **{k: np.stack(v) for k, v in arrays.items()})
        names = [str(f.relative_to(tmp)) for f in sorted(tmp.rglob("*")) if f.is_file()]
        storage.upload_files(tmp, names, storage.join(folder, "labelling"))
    return storage.join(folder, "labelling", "sheet.html")


def pairs_from_labels(labels_uri: str) -> list[PreferencePair]:
    """The pairs a filled ``labels.csv`` chooses, with the latents of the sheet beside it (``pairs.npz``)."""
    from t2v.preferences import labelled_pairs, read_labels

    sheet = labels_uri.rsplit("/", 1)[0]
    with storage.local_file_for(storage.join(sheet, "pairs.npz")) as path:
        data = dict(np.load(path))
    ids = [str(i) for i in data["pair_ids"]]
    position = {pair_id: n for n, pair_id in enumerate(ids)}
    chosen = labelled_pairs(read_labels(storage.read_text(labels_uri), known_pairs=set(ids)))
    out = []
    for pair_id, side in chosen:
        n = position[pair_id]
        a, b = data["latents_a"][n], data["latents_b"][n]
        preferred, rejected = (a, b) if side == "a" else (b, a)
        out.append(PreferencePair(preferred, rejected, {k: data[k][n] for k in TEXT_KEYS},
                                  {"caption": str(data["captions"][n]), "pair_id": pair_id, "preferred": side}))
    return out


def _lineage(dit: dict[str, Any]) -> dict[str, Any]:
    """What the DPO checkpoint's manifest carries on from its input's: a fine-tune's base model."""
    return {"base_model": dit["base_model"]} if dit.get("base_model") else {}


def _dpo(run: StageRun, dit: dict[str, Any], vae: dict[str, Any], latents: dict[str, Any]) -> StageOutput:
    import mlflow

    from t2v.rewards import build_reward

    ctx = run.ctx
    cfg = ctx.config.dpo
    if cfg is None:
        log.info("dpo: the profile has no dpo section; the input checkpoint passes through")
        return StageOutput(
            files=dit.get("files", {}),
            summary={"skipped": "no dpo section in the profile"},
            extra={"checkpoint_uri": dit["checkpoint_uri"], "init_checkpoint_uri": dit["checkpoint_uri"],
                   **_lineage(dit)},
        )
    start = time.monotonic()
    init_uri = cfg.init_from or dit["checkpoint_uri"]
    base_model = dit.get("base_model")  # a fine-tune's lineage (its adapter names the base version)
    negative = load_negative(latents)
    mlflow.log_params({
        "dpo.samples_per_prompt": cfg.samples_per_prompt, "dpo.beta": cfg.beta, "dpo.reward": cfg.reward,
        "dpo.rounds": cfg.rounds, "dpo.pair_margin": cfg.pair_margin, "dpo.pairs_per_prompt": cfg.pairs_per_prompt, "dpo.sample_steps": cfg.sample_steps,
        "dpo.guidance_scale": cfg.guidance_scale, "dpo.shift": cfg.shift,
    })
    if cfg.reward == "labels":  # human raters' pairs: no sampling, one round of training
        pairs = pairs_from_labels(cfg.labels_uri)
        if not pairs:
            raise StageError(f"dpo: {cfg.labels_uri} has no pair with a majority for a or b")
        folder = storage.join(run.uri, "round-0")
        result = run_trainer(run, STAGE, write_pair_set(pairs, negative, folder), init_uri, name=f"{ctx.run_name}-dpo-r0",
                             folder=folder, base_model=base_model)
        summary = {"rounds": [{"round": 0, "pairs": len(pairs), "final_loss": result["final_loss"], "first_loss": result["first_loss"]}],
                   "pairs": len(pairs), "reward": "labels", "labels_uri": cfg.labels_uri, "beta": cfg.beta,
                   "seconds": round(time.monotonic() - start, 1)}
        log.info("dpo: %d labelled pairs from %s", len(pairs), cfg.labels_uri)
        return StageOutput(files=result["files"], summary=summary,
                           extra={"checkpoint_uri": result["checkpoint_uri"], "init_checkpoint_uri": init_uri, **_lineage(dit)},
                           mirror=("pairs",))

    prompts = training_prompts(latents, cfg.num_prompts, cfg.seed)
    autoencoder = checkpoints.load_vae(vae["checkpoint_uri"])
    latent_shape = list(latents["summary"]["video_latent_shape"])
    latent_shape[0] = autoencoder.cfg.latent_frames(cfg.num_frames)
    reward = build_reward(cfg)
    mlflow.log_param("dpo.prompts", len(prompts))

    def seeds_of(round_index: int) -> list[int]:
        return [cfg.seed + ROUND_SEED_STRIDE * round_index + k for k in range(cfg.samples_per_prompt)]

    policy_uri, rounds, files, sheets = init_uri, [], {}, []
    for r in range(cfg.rounds):
        folder = storage.join(run.uri, f"round-{r}")
        policy = checkpoints.load_dit(policy_uri)
        policy.set_attention_backend(cfg.attention_backend)
        candidates, videos = sample_candidates(policy, autoencoder, prompts, negative, latent_shape, cfg, seeds_of(r), f"dpo round {r} sampling")
        del policy
        rewards = score_candidates(reward, prompts, videos)
        indices = preference_pairs(rewards, cfg.pair_margin, cfg.pairs_per_prompt)
        mlflow.log_metrics({"dpo/candidate_reward_mean": float(rewards.mean()), "dpo/pairs": len(indices),
                            "dpo/reward_gap_mean": float(np.mean([rewards[p, w] - rewards[p, lose] for p, w, lose in indices])) if indices else 0.0}, step=r)
        storage.write_json(storage.join(folder, "candidates.json"), {
            "seeds": seeds_of(r), "sampler": {"steps": cfg.sample_steps, "guidance_scale": cfg.guidance_scale, "shift": cfg.shift},
            "prompts": [s.meta.get("caption", "") for s in prompts], "rewards": rewards.tolist(), "pairs": indices,
        })
        if cfg.labelling_sheet:
            sheets.append(write_labelling_sheet(candidates, videos, prompts, rewards, folder, fps=ctx.config.world.fps))
        if not indices:
            raise StageError(
                f"dpo round {r}: no pair of candidates differs by pair_margin={cfg.pair_margin} "
                f"(rewards {rewards.min():.3f}..{rewards.max():.3f}); lower dpo.pair_margin or raise samples_per_prompt"
            )
        log.info("dpo round %d: %d prompts x %d candidates, reward %.3f, %d pairs", r, len(prompts), cfg.samples_per_prompt, rewards.mean(), len(indices))
        pair_set = write_pair_set(pairs_from_candidates(indices, candidates, prompts, rewards), negative, folder)
        result = run_trainer(run, STAGE, pair_set, policy_uri, name=f"{ctx.run_name}-dpo-r{r}", folder=folder, base_model=base_model)
        rounds.append({"round": r, "reward_mean": float(rewards.mean()), "pairs": len(indices),
                       "final_loss": result["final_loss"], "first_loss": result["first_loss"]})
        policy_uri, files = result["checkpoint_uri"], result["files"]

    policy = checkpoints.load_dit(policy_uri)
    policy.set_attention_backend(cfg.attention_backend)
    _, after_videos = sample_candidates(policy, autoencoder, prompts, negative, latent_shape, cfg, seeds_of(0), "dpo final sampling")
    reward_after = float(score_candidates(reward, prompts, after_videos).mean())
    summary = {
        "rounds": rounds,
        "reward_before": rounds[0]["reward_mean"],
        "reward_after": reward_after,
        "pairs": sum(r["pairs"] for r in rounds),
        "samples_per_prompt": cfg.samples_per_prompt,
        "prompts": len(prompts),
        "beta": cfg.beta,
        "reward": cfg.reward,
        "labelling_sheets": sheets,
        "seconds": round(time.monotonic() - start, 1),
    }
    mlflow.log_metrics({"dpo/reward_before": summary["reward_before"], "dpo/reward_after": reward_after})
    tracking.log_to_parent(ctx.tracking_uri, ctx.parent_run_id, metrics={
        "dpo/reward_before": summary["reward_before"], "dpo/reward_after": reward_after, "dpo/pairs": summary["pairs"]})
    log.info("dpo: reward %.3f -> %.3f on the training prompts (round 0's seeds)", summary["reward_before"], reward_after)
    return StageOutput(
        files=files,
        summary=summary,
        extra={"checkpoint_uri": policy_uri, "init_checkpoint_uri": init_uri, **_lineage(dit)},
        mirror=("reward_before", "reward_after", "pairs"),
    )


STAGES = (
    Stage(STAGE, output="dit", inputs={"dit": "dit", "vae": "vae", "latents": "latents"}, settings=_settings, body=_dpo),
)
