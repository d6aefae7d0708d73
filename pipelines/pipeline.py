"""The training pipeline: the whole chain of stages as one KFP DAG.

    prepare-data -> curate-shard x N (ParallelFor) -> curate (Collected) -> train-vae -> encode
                 -> t2i -> t2vi -> t2v -> dpo -> evaluate -> register
    exit handler: finish-tracking closes the MLflow parent run whatever happened.

The stages and their order are the catalog's (:mod:`components.framework.catalog`); a test checks that
the compiled DAG's tasks are exactly those. Every task gets the same run context (resolved config JSON, storage root, MLflow parent run ...) as
pipeline parameters; stages hand each other small JSON manifests, the bulk data stays in the object store.
Caching is off for every task: stages are idempotent on their own (they skip work whose outputs exist with
the same fingerprint), and KFP's cache would silently skip training, evaluation and registration.
Retries only on the idempotent data stages. Resources, node pools and tolerations apply on the cluster;
the local runner ignores them.
"""

from kfp import dsl, kubernetes

from components.curate.component import curate_merge, curate_shard
from components.dpo.component import dpo
from components.encode.component import encode
from components.evaluate.component import evaluate
from components.framework import catalog
from components.framework.context import CONTEXT_KEYS
from components.prepare_data.component import prepare_data
from components.register.component import register
from components.tracking.component import finish_tracking
from components.train_dit.component import train_dit
from components.train_vae.component import train_vae
from t2v.config import ClusterConfig, TaskResources

PIPELINE_NAME = "step-video-t2v-training"


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
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0)
    return task


def build_pipeline(cluster: ClusterConfig):
    """The pipeline function, with the cluster placement of the given profile baked in."""
    res = cluster.resources

    @dsl.pipeline(name=PIPELINE_NAME, description="Step-Video-T2V training: curate -> VAE -> T2I -> T2VI -> T2V -> DPO -> eval -> register")
    def training_pipeline(
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
        with dsl.ExitHandler(exit_task, name="training"):
            raw = _place(prepare_data(**ctx).set_display_name("prepare-data"), res.data, cluster, retries=2)
            with dsl.ParallelFor(curate_shards, name="curate-fan-out") as shard:
                part = curate_shard(shard_index=shard, raw=raw.outputs["raw"], **ctx)
                _place(part.set_display_name("curate-shard"), res.curate, cluster, retries=2)
            clips = curate_merge(raw=raw.outputs["raw"], parts=dsl.Collected(part.outputs["part"]), **ctx)
            _place(clips.set_display_name("curate"), res.data, cluster, retries=2)
            vae = _place(train_vae(clips=clips.outputs["clips"], **ctx).set_display_name("train-vae"), res.gpu_single, cluster)
            latents = encode(clips=clips.outputs["clips"], vae=vae.outputs["vae"], raw=raw.outputs["raw"], **ctx)
            _place(latents.set_display_name("encode"), res.gpu_single, cluster, retries=1)
            previous, model = None, None
            for stage in catalog.producing("dit"):  # the training cascade t2i -> t2vi -> t2v, then dpo
                if stage == "dpo":
                    task = dpo(dit=model, vae=vae.outputs["vae"], latents=latents.outputs["latents"], **ctx)
                    previous = _place(task.set_display_name(stage), res.trainer_launcher, cluster)
                    model = previous.outputs["dpo_dit"]
                    continue
                kwargs = {"init": model} if model is not None else {}
                task = train_dit(stage=stage, latents=latents.outputs["latents"], **kwargs, **ctx)
                previous = _place(task.set_display_name(stage), res.trainer_launcher, cluster)
                model = previous.outputs["dit"]
            evaluation = evaluate(
                dit=model,
                vae=vae.outputs["vae"],
                latents=latents.outputs["latents"],
                raw=raw.outputs["raw"],
                **ctx,
            )
            _place(evaluation.set_display_name("evaluate"), res.gpu_single, cluster)
            registered = register(
                dit=model,
                vae=vae.outputs["vae"],
                evaluation=evaluation.outputs["evaluation"],
                clips=clips.outputs["clips"],
                **ctx,
            )
            _place(registered.set_display_name("register"), res.data, cluster)

    return training_pipeline
