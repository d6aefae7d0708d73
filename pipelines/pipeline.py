"""The pipelines, one per job, built from the same components:

    pretrain   prepare-data -> curate-shard x N (ParallelFor) -> curate (Collected) -> train-vae -> encode
               -> t2i -> t2vi -> t2v -> dpo -> evaluate -> register
    finetune   prepare-data -> curate-shard x N -> curate -> base-model -> encode (the base's VAE and text
               encoders) -> finetune (full or LoRA) -> dpo -> evaluate (against the champion) -> register
    curation   prepare-data -> curate-shard x N -> curate
    evaluate   base-model (any model version or checkpoint) -> evaluate (against the champion)

    every one: an exit handler, finish-tracking, closes the MLflow parent run whatever happened.

Each is compiled and versioned on its own (``t2v compile --pipeline NAME``); :data:`PIPELINES` names their
stages in order, and a test checks that each compiled DAG's tasks are exactly those stages, each input
fed by the nearest earlier stage of its pipeline serving its kind (:func:`components.framework.catalog.feeding`).

Every task gets the same run context (resolved config JSON, storage root, MLflow parent run ...) as
pipeline parameters; stages hand each other small JSON manifests, the bulk data stays in the object store.
Caching is off for every task: stages are idempotent on their own (they skip work whose outputs exist with
the same fingerprint), and KFP's cache would silently skip training, evaluation and registration.
Retries only on the idempotent data stages. Resources, node pools and tolerations apply on the cluster;
the local runner ignores them.
"""


from collections.abc import Callable
from dataclasses import dataclass

from kfp import dsl, kubernetes

from components.base_model.component import base_model
from components.curate.component import curate_merge, curate_shard
from components.dpo.component import dpo
from components.encode.component import encode
from components.evaluate.component import evaluate
from components.framework.context import CONTEXT_KEYS
from components.prepare_data.component import prepare_data
from components.register.component import register
from components.tracking.component import finish_tracking
from components.train_dit.component import train_dit
from components.train_vae.component import train_vae
from t2v.config import ClusterConfig, TaskResources
from t2v.launch.spec import MLFLOW_CREDENTIALS_SECRET


@dataclass(frozen=True)
class PipelineSpec:
    """One job's pipeline: its KFP name, what it does, and its stages in order."""

    job: str
    kfp_name: str
    description: str
    stages: tuple[str, ...]
    body: Callable[..., None]


CURATION = ("prepare-data", "curate-shard", "curate")
SCRATCH_DIR = "/scratch"  # where a task with TaskResources.scratch keeps its temporary files (TMPDIR)


def _mlflow_identity(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The pipeline's MLflow identity (the tracking server runs MLflow's basic-auth app) from the Secret
    ``mlflow-credentials`` in the run's namespace; optional, so a server without authentication needs none."""
    return kubernetes.use_secret_as_env(
        task,
        secret_name=MLFLOW_CREDENTIALS_SECRET,
        secret_key_to_env={"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
        optional=True,
    )


def _place(task: dsl.PipelineTask, resources: TaskResources, cluster: ClusterConfig, retries: int = 0):
    """Resources, node pool, caching and retries of one task (no-ops under the local runner)."""
    retries = retries if cluster.task_retries else 0
    task.set_caching_options(enable_caching=False)
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    pool = cluster.cpu_pool
    if resources.gpus:
        task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(resources.gpus)
        pool = cluster.gpu_pool
        kubernetes.add_toleration(task, key=cluster.gpu_taint_key, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key=cluster.pool_label, label_value=pool)
    if resources.scratch:  # temporary files on a disk of their own, deleted with the pod
        kubernetes.add_ephemeral_volume(
            task, volume_name="scratch", mount_path=SCRATCH_DIR, access_modes=["ReadWriteOnce"],
            size=resources.scratch, storage_class_name=cluster.scratch_storage_class,
        )
        task.set_env_variable("TMPDIR", SCRATCH_DIR)
    _mlflow_identity(task)
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0)
    return task


# the jobs' bodies: each lays out its tasks inside the exit handler ---------------------------------------
def _curation(ctx: dict, cluster: ClusterConfig, curate_shards):
    res = cluster.resources
    raw = _place(prepare_data(**ctx).set_display_name("prepare-data"), res.data, cluster, retries=2)
    with dsl.ParallelFor(curate_shards, name="curate-fan-out") as shard:
        part = curate_shard(shard_index=shard, raw=raw.outputs["raw"], **ctx)
        _place(part.set_display_name("curate-shard"), res.curate, cluster, retries=2)
    clips = curate_merge(raw=raw.outputs["raw"], parts=dsl.Collected(part.outputs["part"]), **ctx)
    _place(clips.set_display_name("curate"), res.data, cluster, retries=2)
    return raw, clips


def _train(stage: str, latents, init, ctx: dict, cluster: ClusterConfig):
    kwargs = {"init": init} if init is not None else {}
    task = train_dit(stage=stage, latents=latents, **kwargs, **ctx)
    return _place(task.set_display_name(stage), cluster.resources.trainer_launcher, cluster).outputs["dit"]


def _dpo_evaluate_register(model, vae, latents, raw, clips, ctx: dict, cluster: ClusterConfig):
    res = cluster.resources
    task = dpo(dit=model, vae=vae, latents=latents, **ctx)
    model = _place(task.set_display_name("dpo"), res.trainer_launcher, cluster).outputs["dpo_dit"]
    evaluation = evaluate(dit=model, vae=vae, latents=latents, raw=raw, **ctx)
    _place(evaluation.set_display_name("evaluate"), res.gpu_single, cluster)
    registered = register(dit=model, vae=vae, evaluation=evaluation.outputs["evaluation"], clips=clips, **ctx)
    _place(registered.set_display_name("register"), res.data, cluster)


def _pretrain(ctx: dict, cluster: ClusterConfig, curate_shards) -> None:
    res = cluster.resources
    raw, clips = _curation(ctx, cluster, curate_shards)
    vae = _place(train_vae(clips=clips.outputs["clips"], **ctx).set_display_name("train-vae"), res.gpu_single, cluster)
    latents = encode(clips=clips.outputs["clips"], vae=vae.outputs["vae"], raw=raw.outputs["raw"], **ctx)
    _place(latents.set_display_name("encode"), res.gpu_single, cluster, retries=1)
    model = None
    for stage in ("t2i", "t2vi", "t2v"):  # the report's cascade, each from the last one's checkpoint
        model = _train(stage, latents.outputs["latents"], model, ctx, cluster)
    _dpo_evaluate_register(
        model, vae.outputs["vae"], latents.outputs["latents"], raw.outputs["raw"], clips.outputs["clips"], ctx, cluster
    )


def _finetune(ctx: dict, cluster: ClusterConfig, curate_shards) -> None:
    res = cluster.resources
    _, clips = _curation(ctx, cluster, curate_shards)
    base = _place(base_model(**ctx).set_display_name("base-model"), res.data, cluster, retries=2)
    # the team's clips through the base model's own VAE and text encoders
    latents = encode(clips=clips.outputs["clips"], vae=base.outputs["vae"], raw=base.outputs["raw"], **ctx)
    _place(latents.set_display_name("encode"), res.gpu_single, cluster, retries=1)
    model = _train("finetune", latents.outputs["latents"], base.outputs["dit"], ctx, cluster)
    _dpo_evaluate_register(
        model, base.outputs["vae"], latents.outputs["latents"], base.outputs["raw"], clips.outputs["clips"], ctx, cluster
    )


def _curation_only(ctx: dict, cluster: ClusterConfig, curate_shards) -> None:
    _curation(ctx, cluster, curate_shards)


def _evaluate_only(ctx: dict, cluster: ClusterConfig, curate_shards) -> None:
    del curate_shards  # no curation in this job
    base = _place(base_model(**ctx).set_display_name("base-model"), cluster.resources.data, cluster, retries=2)
    evaluation = evaluate(
        dit=base.outputs["dit"], vae=base.outputs["vae"], latents=base.outputs["latents"], raw=base.outputs["raw"], **ctx
    )
    _place(evaluation.set_display_name("evaluate"), cluster.resources.gpu_single, cluster)


PIPELINES: dict[str, PipelineSpec] = {
    spec.job: spec
    for spec in (
        PipelineSpec(
            "pretrain", "step-video-t2v-training",
            "Step-Video-T2V pre-training: curate -> VAE -> T2I -> T2VI -> T2V -> DPO -> eval -> register",
            (*CURATION, "train-vae", "encode", "t2i", "t2vi", "t2v", "dpo", "evaluate", "register"),
            _pretrain,
        ),
        PipelineSpec(
            "finetune", "step-video-t2v-finetune",
            "Fine-tune a released or registered Step-Video-T2V: curate -> encode -> fine-tune (full or LoRA) "
            "-> DPO -> eval against the champion -> register",
            (*CURATION, "base-model", "encode", "finetune", "dpo", "evaluate", "register"),
            _finetune,
        ),
        PipelineSpec(
            "curation", "step-video-t2v-curation",
            "Video curation: raw video table -> curated clip shards, manifest and report",
            CURATION,
            _curation_only,
        ),
        PipelineSpec(
            "evaluate", "step-video-t2v-evaluate",
            "Evaluate any model version or checkpoint against the champion on a prompt set",
            ("base-model", "evaluate"),
            _evaluate_only,
        ),
    )
}
#: the pretrain pipeline's KFP name (the first pipeline this project had)
PIPELINE_NAME = PIPELINES["pretrain"].kfp_name


def get_pipeline(job: str) -> PipelineSpec:
    try:
        return PIPELINES[job]
    except KeyError:
        raise ValueError(f"unknown pipeline {job!r}; pipelines: {', '.join(PIPELINES)}") from None


def build_pipeline(cluster: ClusterConfig, job: str = "pretrain"):
    """The pipeline function of ``job``, with the cluster placement of the given profile baked in."""
    spec = get_pipeline(job)

    @dsl.pipeline(name=spec.kfp_name, description=spec.description)
    def job_pipeline(
        config_json: str,
        run_root: str,
        tracking_uri: str,
        parent_run_id: str,
        run_name: str,
        pipeline_version: str = "dev",
        git_sha: str = "unknown",
        curate_shards: list = [0],  # noqa: B006 - KFP pipeline parameters need literal defaults
    ):
        ctx = {name: value for name, value in locals().items() if name in CONTEXT_KEYS}  # every task's run context
        exit_task = finish_tracking(tracking_uri=tracking_uri, parent_run_id=parent_run_id)
        exit_task.set_caching_options(enable_caching=False)
        exit_task.set_display_name("finish-tracking")
        _mlflow_identity(exit_task)
        with dsl.ExitHandler(exit_task, name="stages"):
            spec.body(ctx, cluster, curate_shards)

    return job_pipeline
