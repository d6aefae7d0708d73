"""``t2v``: the one command line for humans, CI and the pipeline's components.

t2v run --local [--profile tiny] [--set section.field=value ...]   the whole pipeline under kfp.local
t2v compile [--profile P] [--out pipeline.yaml]                   KFP IR YAML stamped with its version
t2v submit --host URL --tracking-uri URI [--upload-only]          upload a pipeline version, start a run
t2v stage <name> [--run-name R]                                   one stage outside KFP (debugging)
t2v config show|validate [--profile P]                            the resolved, validated config
t2v world generate --out DIR                                      the synthetic video world alone
t2v promote --model M [--version V] [--reason R]                  move champion to a checked version (CI identity)
t2v rollback --model M [--reason R]                                move champion back to the version it replaced
t2v models [--model M] [--audit]                                   versions, aliases, evidence, lineage, audit trail
t2v model summary --config P [--json]                             parameter names, shapes, counts
t2v model verify URI --network dit|vae [--config P]               a checkpoint against a config (headers)
t2v plan --profile P [--stage t2v] [--gpu h100-80gb] [--gpus N]   memory per GPU, FLOPs, step time
t2v generate "a red square moving left" --model models:/M@champion  text in, mp4 out
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from t2v.config import ConfigError, ProjectConfig, available_profiles, load_config

log = logging.getLogger("t2v")


def _setup_logging(verbose: bool) -> None:
    from components.runtime import configure_logging
    from t2v.secrets import install_log_redaction

    configure_logging()
    install_log_redaction()
    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)


def _tracking(uri: str | None) -> str | None:
    """A tracking URI with its userinfo moved into MLFLOW_TRACKING_USERNAME/PASSWORD (t2v.secrets): what
    the command passes on, logs and writes holds no password."""
    from t2v.secrets import adopt_uri_credentials

    return adopt_uri_credentials(uri)


def _config(profile: str, overrides: tuple[str, ...]) -> ProjectConfig:
    try:
        return load_config(profile, list(overrides))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


profile_option = click.option(
    "--profile",
    default="tiny",
    show_default=True,
    help=f"config profile under configs/ ({', '.join(available_profiles())})",
)
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE", help="override a config value"
)
JOBS = ("pretrain", "finetune", "curation", "evaluate")  # pipelines.pipeline.PIPELINES (a test keeps them equal)
pipeline_option = click.option(
    "--pipeline", "job", type=click.Choice(JOBS), default="pretrain", show_default=True,
    help="which job's pipeline: pretrain (the whole chain), finetune (from base_model.uri), curation, evaluate",
)


@click.group(help=__doc__.split("\n\n")[0])
@click.option("-v", "--verbose", is_flag=True)
def main(verbose: bool) -> None:
    import os

    _setup_logging(verbose)
    if os.environ.get("MLFLOW_TRACKING_URI"):  # the subcommands' --tracking-uri default
        os.environ["MLFLOW_TRACKING_URI"] = _tracking(os.environ["MLFLOW_TRACKING_URI"])


@main.command()
@click.option(
    "--local",
    "local_",
    is_flag=True,
    required=True,
    help="run with the KFP local runner (the only mode of `run`)",
)
@profile_option
@set_option
@click.option("--run-name", default=None, help="reuse a name to resume: finished stages are skipped")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="MLflow tracking URI")
@click.option("--root", default=None, help="storage root URI (default: storage.root of the profile)")
@click.option(
    "--summary-json", type=click.Path(dir_okay=False), default=None, help="also write the summary here"
)
@pipeline_option
def run(local_, profile, overrides, run_name, tracking_uri, root, summary_json, job) -> None:
    """Run a job's pipeline locally (kfp.local, subprocess runner) and print what to open."""
    from pipelines.runner import run_local

    cfg = _config(profile, overrides)
    tracking_uri = _tracking(tracking_uri)
    try:
        result = run_local(cfg, run_name=run_name, tracking_uri=tracking_uri, root=root, job=job)
    except RuntimeError as exc:
        raise click.ClickException(f"pipeline failed: {exc}") from None
    summary = _run_summary(result)
    _print_summary(summary)
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary, indent=2, default=str))


def _run_summary(result) -> dict:
    evaluation = result.manifests.get("evaluate", {}).get("summary", {})
    registered = result.manifests.get("register", {}).get("summary", {})
    curate = result.manifests.get("curate", {}).get("summary", {})
    base = result.manifests.get("base-model", {}).get("summary", {})
    try:
        import mlflow

        experiment_id = mlflow.MlflowClient(result.tracking_uri).get_run(result.parent_run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the summary stays printable when the server has gone
        experiment_id = None
    finetune = result.manifests.get("finetune", {}).get("summary", {})
    return {
        "pipeline": result.job,
        "experiment_id": experiment_id,
        "run_name": result.run_name,
        "parent_run_id": result.parent_run_id,
        "tracking_uri": result.tracking_uri,
        "run_root": result.run_root,
        "pipeline_version": result.pipeline_version,
        "wall_seconds": round(result.seconds, 1),
        "curate": {k: curate.get(k) for k in ("videos", "clips", "kept")},
        "vae_eval_psnr": result.manifests.get("train-vae", {}).get("summary", {}).get("eval_psnr"),
        "base_model": {k: base.get(k) for k in ("reference", "version")} if base else None,
        "finetune": {k: finetune.get(k) for k in ("final_loss", "trainable_parameters", "parameters", "train_seconds")}
        if finetune else None,
        "losses": {
            s: result.manifests.get(s, {}).get("summary", {}).get("final_loss")
            for s in ("t2i", "t2vi", "t2v", "finetune") if s in result.manifests
        },
        "evaluation": {
            "score_total": evaluation.get("score_total"),
            "untrained_score_total": evaluation.get("untrained_score_total"),
            "start_score_total": evaluation.get("start_score_total"),
            "vae_ceiling_total": evaluation.get("vae_ceiling_total"),
            "scores": evaluation.get("scores"),
            "untrained_scores": evaluation.get("untrained_scores"),
            "gate": evaluation.get("gate_reason"),
        },
        "dpo": {k: result.manifests.get("dpo", {}).get("summary", {}).get(k) for k in ("pairs", "reward_before", "reward_after", "skipped")},
        "registered": registered,
    }


def run_page_url(tracking_uri: str, experiment_id: str | None, run_id: str) -> str | None:
    """The parent run's page in the MLflow UI, in its model-training view (a local store: where
    ``mlflow ui`` serves it by default)."""
    if not experiment_id:
        return None
    from t2v.secrets import strip_credentials

    base = strip_credentials(tracking_uri).rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def _print_summary(summary: dict) -> None:
    ev = summary["evaluation"]
    reg = summary["registered"]
    uri = summary["tracking_uri"]
    ui = f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"
    page = run_page_url(uri, summary.get("experiment_id"), summary["parent_run_id"])
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    base, finetune = summary.get("base_model"), summary.get("finetune")
    lines = [
        "",
        f"Pipeline run {summary['run_name']} ({summary.get('pipeline', 'pretrain')}) finished in "
        f"{summary['wall_seconds']:.0f} s (version {summary['pipeline_version']}).",
        *([f"  curated clips: {summary['curate'].get('kept')} kept of {summary['curate'].get('clips')} from "
           f"{summary['curate'].get('videos')} videos"] if summary["curate"].get("clips") is not None else []),
        *([f"  base model: {base['reference']}" + (f" ({base['version']})" if base.get("version") else "")] if base else []),
        *([f"  VAE reconstruction PSNR: {fmt(summary['vae_eval_psnr'])} dB"] if summary["vae_eval_psnr"] is not None else []),
        *(["  final losses: " + ", ".join(f"{k} {fmt(v)}" for k, v in summary["losses"].items())] if summary["losses"] else []),
        *([f"  fine-tune: {finetune['trainable_parameters']} of {finetune['parameters']} parameters trained"]
          if finetune and finetune.get("trainable_parameters") else []),
        *([f"  checker score (held-out prompts): trained {fmt(ev['score_total'])}"
           + (f" vs {fmt(ev['start_score_total'])} before its last stage" if ev.get("start_score_total") is not None else "")
           + f" vs untrained {fmt(ev['untrained_score_total'])} (VAE round trip of the true videos: {fmt(ev['vae_ceiling_total'])})"]
          if ev.get("score_total") is not None else []),
        *([f"  dpo: {summary['dpo']['pairs']} preference pairs; {summary['dpo'].get('reward') or 'checker'} reward on its training prompts "
           f"{fmt(summary['dpo']['reward_before'])} -> {fmt(summary['dpo']['reward_after'])}"] if summary["dpo"].get("pairs") else []),
        *([f"  gate: {ev['gate']}"] if ev.get("gate") else []),
        *([f"  registered: {reg.get('dit_model')} v{reg.get('dit_version')}, {reg.get('vae_model')} v{reg.get('vae_version')}"
           + (f" (aliases: {', '.join(reg.get('aliases') or [])})" if reg.get("aliases") else "")] if reg else []),
        "",
        "Open the MLflow UI:",
        f"  {ui}",
        *([f"  the run's page: {page}"] if page else []),
        f"  then the experiment's run '{summary['run_name']}' (id {summary['parent_run_id']}) and its child runs"
        + (f",\n  and Models -> {reg.get('dit_model')} version {reg.get('dit_version')}." if reg else "."),
        f"Data and manifests: {summary['run_root']}",
    ]
    click.echo("\n".join(lines))


@main.command(name="compile")
@profile_option
@set_option
@click.option("--out", default="pipeline.yaml", show_default=True, type=click.Path(dir_okay=False))
@pipeline_option
def compile_(profile, overrides, out, job) -> None:
    """Compile a job's pipeline to KFP IR YAML, stamped with the pipeline version."""
    from pipelines.runner import compile_pipeline

    stamped = compile_pipeline(_config(profile, overrides), out, job)
    click.echo(
        f"wrote {stamped['path']} ({stamped['pipeline_name']}, pipeline version {stamped['pipeline_version']}, "
        f"profile {stamped['profile']})"
    )


@main.command()
@profile_option
@set_option
@click.option("--host", envvar="KFP_HOST", required=True, help="KFP API endpoint")
@click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="needed unless --upload-only"
)
@click.option("--package", default="pipeline.yaml", show_default=True, type=click.Path(dir_okay=False))
@click.option("--run-name", default=None)
@click.option("--upload-only", is_flag=True, help="only upload the pipeline version")
@click.option("--experiment", default="step-video-t2v", show_default=True, help="KFP experiment of the run")
@click.option("--ui-host", envvar="KFP_UI_HOST", default=None, help="KFP UI address for the links (default: --host)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@pipeline_option
def submit(profile, overrides, host, tracking_uri, package, run_name, upload_only, experiment, ui_host, as_json, job) -> None:
    """Upload the pipeline and a version named by the pipeline version (reused when already there) to a
    KFP host, and start a run in EXPERIMENT with its MLflow parent run; prints the run's URL."""
    from pipelines.kfp_submit import SubmitError
    from pipelines.runner import submit as submit_

    tracking_uri = _tracking(tracking_uri)
    if not upload_only and not tracking_uri:
        raise click.UsageError("--tracking-uri (or MLFLOW_TRACKING_URI) is needed to start a run")
    try:
        out = submit_(
            _config(profile, overrides), host, package, tracking_uri, run_name=run_name, upload_only=upload_only,
            experiment=experiment, job=job, ui_host=ui_host,
        )
    except SubmitError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    how = "reused" if out["version_reused"] else "uploaded"
    click.echo(f"pipeline {out['pipeline_name']} version {out['pipeline_version']} ({how}): {out['pipeline_url']}")
    if not upload_only:
        click.echo(f"run {out['run_name']} in experiment {out['experiment']} (MLflow parent run {out['parent_run_id']}):")
        click.echo(f"  {out['run_url']}")


@main.command()
@click.argument("name")
@profile_option
@set_option
@click.option(
    "--run-name", default="debug", show_default=True, help="the run whose earlier stages feed this one"
)
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None)
@click.option("--root", default=None)
@click.option("--parent-run-id", default=None, help="MLflow parent run (default: a new one)")
@click.option(
    "--input", "inputs", multiple=True, metavar="NAME=MANIFEST_URI", help="override an input manifest"
)
@click.option("--shard-index", type=int, default=0, show_default=True, help="for curate-shard")
def stage(name, profile, overrides, run_name, tracking_uri, root, parent_run_id, inputs, shard_index) -> None:
    """Run one stage outside KFP, reading the earlier stages' manifests of RUN_NAME."""
    from components.framework import catalog
    from pipelines.stage_runner import run_stage

    if name not in catalog.names():
        raise click.ClickException(f"unknown stage {name!r}; stages: {', '.join(catalog.names())}")
    cfg = _config(profile, overrides)
    tracking_uri = _tracking(tracking_uri)
    try:
        manifest = run_stage(
            cfg,
            name,
            run_name,
            tracking_uri,
            root,
            parent_run_id,
            dict(i.split("=", 1) for i in inputs),
            options={"shard_index": shard_index} if catalog.get(name).instance else None,
        )
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        json.dumps(
            {"manifest_uri": manifest["manifest_uri"], "summary": manifest["summary"]}, indent=2, default=str
        )
    )


@main.group()
def config() -> None:
    """Inspect configuration profiles."""


@config.command("show")
@profile_option
@set_option
def config_show(profile, overrides) -> None:
    """Print the resolved configuration as YAML."""
    import yaml

    cfg = _config(profile, overrides)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    click.echo(f"# config hash {cfg.config_hash()}")


@config.command("validate")
@profile_option
@set_option
def config_validate(profile, overrides) -> None:
    """Validate a profile (exit 1 naming the bad field)."""
    cfg = _config(profile, overrides)
    click.echo(f"{cfg.profile}: valid (config hash {cfg.config_hash()})")


@main.group()
def world() -> None:
    """The synthetic video world."""


@world.command("generate")
@profile_option
@set_option
@click.option("--out", required=True, type=click.Path(file_okay=False))
def world_generate(profile, overrides, out) -> None:
    """Generate the raw videos and metadata.jsonl of the profile's world into OUT."""
    from t2v.world import generate_raw_videos

    cfg = _config(profile, overrides)
    records = generate_raw_videos(cfg.world, Path(out))
    click.echo(f"wrote {len(records)} raw videos and metadata.jsonl to {out}")


@main.command()
@click.argument("prompts", nargs=-1, required=True)
@click.option(
    "--model",
    "model_ref",
    required=True,
    help="DiT: models:/<name>@<alias>, models:/<name>/<version>, or a checkpoint URI",
)
@click.option("--vae", default=None, help="VAE checkpoint URI (default: the one the registered DiT names)")
@click.option(
    "--text-encoders",
    default=None,
    metavar="CLIP_URI,LLM_URI",
    help="default: the ones the registered DiT names",
)
@click.option(
    "--out", default="video.mp4", show_default=True, help="mp4 path; several prompts give <stem>-<i>.mp4"
)
@profile_option
@set_option
@click.option("--steps", type=int, default=None, help="default: evaluate.num_steps of the profile")
@click.option("--guidance", type=float, default=None, help="default: evaluate.guidance_scale")
@click.option("--shift", type=float, default=None, help="default: evaluate.shift")
@click.option("--frames", type=int, default=None, help="default: evaluate.num_frames")
@click.option("--seed", type=int, default=None, help="default: evaluate.seed")
@click.option("--fps", type=int, default=25, show_default=True)
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None)
def generate(
    prompts,
    model_ref,
    vae,
    text_encoders,
    out,
    profile,
    overrides,
    steps,
    guidance,
    shift,
    frames,
    seed,
    fps,
    tracking_uri,
) -> None:
    """Text in, mp4 out, from a registered or file/S3 checkpoint."""
    from t2v.generate import generate as generate_
    from t2v.generate import resolve
    from t2v.tracking import absolute_tracking_uri
    from t2v.video import write_mp4

    cfg = _config(profile, overrides)
    ev = cfg.evaluate
    tracking_uri = _tracking(tracking_uri) or absolute_tracking_uri(cfg.tracking.default_tracking_uri)
    from mlflow.exceptions import MlflowException

    from t2v.errors import UserError
    from t2v.registry import lookup_error

    try:
        resolved = resolve(model_ref, tracking_uri)
        if vae:
            resolved.vae_uri = vae
        if text_encoders:
            resolved.clip_uri, _, resolved.llm_uri = text_encoders.partition(",")
        height, width = cfg.encode.resolution
        videos = generate_(
            list(prompts),
            resolved,
            cfg.text_encoders,
            height,
            width,
            frames or ev.num_frames,
            steps or ev.num_steps,
            guidance or ev.guidance_scale,
            shift or ev.shift,
            ev.seed if seed is None else seed,
            ev.negative_prompt,
            attention_backend=ev.attention_backend,
        )
    except MlflowException as exc:
        raise click.ClickException(lookup_error(model_ref, exc, tracking_uri)) from None
    except (ValueError, RuntimeError, UserError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None
    out = Path(out)
    paths = (
        [out]
        if len(videos) == 1
        else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(videos))]
    )
    for path, frames_ in zip(paths, videos):
        write_mp4(path, frames_, fps=fps)
        click.echo(f"wrote {path} ({frames_.shape[0]} frames, {frames_.shape[2]}x{frames_.shape[1]})")


@main.group()
def model() -> None:
    """Inspect the networks of a profile."""


@model.command("summary")
@click.option("--config", "profile", default="tiny", show_default=True, help="config profile")
@set_option
@click.option("--json", "as_json", is_flag=True, help="print the full JSON (names and shapes)")
def model_summary(profile, overrides, as_json) -> None:
    """Parameter names, shapes and counts of the DiT and the VAE (meta device: no weights allocated)."""
    from t2v.model_summary import model_summary as summarise

    summary = summarise(_config(profile, overrides))
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    for net in ("dit", "vae"):
        counts = summary["counts"][net]
        click.echo(f"{net}: {counts['parameters']:,} parameters in {counts['tensors']} tensors")


@main.command()
@profile_option
@set_option
@click.option("--stage", "stages", multiple=True, type=click.Choice(["t2i", "t2vi", "t2v", "finetune", "dpo"]),
              help="default: t2i, t2vi and t2v")
@click.option("--gpu", default=None, help="accelerator (default: cluster.gpu_type): h100-80gb, h200-141gb, a100-80gb, a100-40gb, l40s-48gb")
@click.option("--gpus", type=int, default=None, help="GPUs in all (default: the stage's num_nodes x nproc_per_node)")
@click.option("--frames", type=int, default=None, help="clip frames to plan for (default: encode.num_frames)")
@click.option("--resolution", type=(int, int), default=None, help="HEIGHT WIDTH (default: encode.resolution)")
@click.option("--mfu", type=float, default=0.4, show_default=True, help="model FLOPs utilisation for the step time")
def plan(profile, overrides, stages, gpu, gpus, frames, resolution, mfu) -> None:
    """The capacity plan of the DiT training stages: per-GPU memory (parameters, gradients, optimizer,
    activations), FLOPs per step and step time at a stated MFU. Exits 1 when a plan does not fit."""
    from trainer.planner import ACCELERATORS, plan_stage

    config = _config(profile, overrides)
    gpu = gpu or config.cluster.gpu_type
    if gpu not in ACCELERATORS:
        raise click.BadParameter(f"{gpu!r}; choose one of {', '.join(ACCELERATORS)}", param_hint="--gpu")
    failed = []
    for stage in stages or ("t2i", "t2vi", "t2v"):
        if getattr(config, stage) is None:
            raise click.ClickException(f"{stage}: the profile {config.profile} has no {stage} section")
        try:
            result = plan_stage(config, stage, gpu, gpus, frames, resolution, mfu)
        except ValueError as exc:
            raise click.ClickException(f"{stage}: {exc}") from None
        click.echo(result.report())
        if not result.fits:
            failed.append(stage)
    if failed:
        raise click.ClickException(f"the plan of {', '.join(failed)} does not fit {gpu}")


@model.command("verify")
@click.argument("uri")
@click.option(
    "--network", type=click.Choice(["dit", "vae"]), required=True, help="which network the checkpoint holds"
)
@click.option(
    "--config",
    "profile",
    default=None,
    help="check against this profile (default: the checkpoint's own config)",
)
@set_option
def model_verify(uri, network, profile, overrides) -> None:
    """Check a checkpoint's tensor names and shapes against a configuration, reading only the safetensors
    headers (a released transformer/ or vae/ folder, its model root, or a checkpoint of this project)."""
    from t2v import checkpoints, storage

    cfg = None
    if profile:
        project = _config(profile, overrides)
        cfg = project.dit if network == "dit" else project.vae.model
    try:
        report = checkpoints.verify(uri, network, cfg)
    except (checkpoints.CheckpointError, storage.StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    dtypes = ", ".join(f"{name}: {count}" for name, count in sorted(report.dtypes.items()))
    against = f"profile {profile}" if profile else "its own config"
    click.echo(f"{network} {uri}: {report.tensors} tensors, {report.parameters:,} parameters ({dtypes})")
    if not report.ok:
        raise click.ClickException(f"does not fit {against}: " + "; ".join(report.problems()))
    click.echo(f"fits {against}")


@model.command("merge")
@click.argument("adapter")
@click.option("--out", required=True, help="where the merged DiT goes (a folder or s3:// prefix)")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="for a models:/ adapter")
def model_merge(adapter, out, tracking_uri) -> None:
    """Merge a LoRA adapter (a folder, or a registered adapter version models:/<name>/<version>) into its
    base and write a plain DiT checkpoint in the released layout, one tensor at a time."""
    from t2v import checkpoints, storage
    from t2v.generate import resolve

    try:
        uri = resolve(adapter, tracking_uri).dit_uri if adapter.startswith("models:/") else adapter
        if not checkpoints.is_adapter(uri):
            raise click.ClickException(f"{uri}: not a LoRA adapter folder (no {checkpoints.ADAPTER_CONFIG})")
        files = checkpoints.export_merged(uri, storage.to_uri(out))
    except (checkpoints.CheckpointError, storage.StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}: {', '.join(sorted(files))} (adapter {uri} merged into its base)")


def _registry_uri(tracking_uri: str | None, profile: str) -> str:
    from t2v.tracking import absolute_tracking_uri

    return _tracking(tracking_uri) or absolute_tracking_uri(_config(profile, ()).tracking.default_tracking_uri)


registry_tracking_option = click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="default: the profile's local tracking store"
)
allow_local_option = click.option(
    "--allow-local", is_flag=True, help="allow a local registry (sqlite/file), which has no identities"
)


def _echo_record(record) -> None:
    from dataclasses import asdict

    click.echo(json.dumps(asdict(record), indent=2))


@main.command()
@click.option("--model", "model_name", required=True, help="registered model name")
@click.option("--version", default=None, help="version to promote (default: the one holding --from-alias)")
@click.option("--from-alias", default="challenger", show_default=True)
@click.option("--to-alias", default="champion", show_default=True)
@click.option("--reason", default=None, help="why (kept in the audit record)")
@click.option("--rollback", "rollback_", is_flag=True, help="same as `t2v rollback`")
@registry_tracking_option
@profile_option
@allow_local_option
@click.option("--allow-worse", is_flag=True, help="skip the no-regression checks (the gate still has to pass)")
def promote(
    model_name, version, from_alias, to_alias, reason, rollback_, tracking_uri, profile, allow_local, allow_worse
) -> None:
    """Move champion to a version with passing gate evidence that does not regress against the champion,
    as the identity the tracking server authenticates (CI); every attempt is an audit record."""
    from t2v.registry import PromotionError
    from t2v.registry import promote as promote_
    from t2v.registry import rollback as do_rollback

    uri = _registry_uri(tracking_uri, profile)
    try:
        if rollback_:
            record = do_rollback(model_name, to_alias, uri, reason=reason, allow_local=allow_local)
        else:
            record = promote_(
                model_name, version, from_alias, to_alias, uri, reason=reason, allow_local=allow_local,
                allow_worse=allow_worse,
            )
    except PromotionError as exc:
        raise click.ClickException(str(exc)) from None
    _echo_record(record)


@main.command()
@click.option("--model", "model_name", required=True, help="registered model name")
@click.option("--alias", default="champion", show_default=True)
@click.option("--from-version", default=None, help="refuse unless this version holds the alias now")
@click.option("--reason", default=None, help="why (kept in the audit record)")
@registry_tracking_option
@profile_option
@allow_local_option
def rollback(model_name, alias, from_version, reason, tracking_uri, profile, allow_local) -> None:
    """Move champion back to the version it replaced (an audit record names who, when, why, from and to)."""
    from t2v.registry import PromotionError
    from t2v.registry import rollback as do_rollback

    try:
        record = do_rollback(
            model_name, alias, _registry_uri(tracking_uri, profile), reason=reason, allow_local=allow_local,
            from_version=from_version,
        )
    except PromotionError as exc:
        raise click.ClickException(str(exc)) from None
    _echo_record(record)


@main.command()
@click.option("--model", "model_names", multiple=True, help="registered model (default: the profile's DiT and VAE)")
@click.option("--audit", is_flag=True, help="also print the audit trail")
@click.option("--json", "as_json", is_flag=True)
@registry_tracking_option
@profile_option
def models(model_names, audit, as_json, tracking_uri, profile) -> None:
    """List a registered model's versions: aliases, gate and score, lineage (pipeline run, git sha, base
    model of an adapter), and its audit trail."""
    from t2v.registry import PromotionError, list_versions

    uri = _registry_uri(tracking_uri, profile)
    if not model_names:
        reg = _config(profile, ()).registry
        model_names = (reg.dit_model_name, reg.vae_model_name)
    try:
        listings = [list_versions(uri, name) for name in model_names]
    except PromotionError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(listings, indent=2))
        return
    for listing in listings:
        click.echo(f"{listing['model']}" + ("" if listing["champion_audited"] else "  (WARNING: the champion's holder has no audit record)"))
        click.echo(f"  {'version':>7}  {'aliases':<20} {'gate':<8} {'score':>6}  {'vs':>4}  {'git sha':<12} base / run")
        for row in listing["versions"]:
            gate = "passed" if row["gate"] == "passed" else ("failed" if row["gate"] else "-")
            score = "n/a" if row["score"] is None else f"{row['score']:.3f}"
            base = f"base {row['base_model']}" if row["base_model"] else f"run {row['parent_run_id'] or row['run_id']}"
            click.echo(
                f"  {row['version']:>7}  {','.join(row['aliases']) or '-':<20} {gate:<8} {score:>6}  "
                f"{(row['compared_with'] or '-'):>4}  {(row['git_sha'] or '-')[:12]:<12} {base}"
            )
        if audit:
            for rec in listing["audit"]:
                click.echo(
                    f"  {rec['at']}  {rec['action']:<10} {rec.get('alias') or '':<10} "
                    f"{rec.get('from_version') or '-'} -> {rec.get('to_version') or '-'}  by {rec['actor']}"
                    f"{'' if rec.get('authenticated') else ' (unauthenticated)'}: {rec.get('reason')}"
                )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
