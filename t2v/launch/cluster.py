"""Run the job on the cluster: :func:`submit_and_wait` and the :class:`JobStatus` it returns.

:func:`submit_and_wait` creates the object, polls its status conditions, logs progress, and deletes the job
on failure, timeout or interrupt ("fails loudly and cleans up"). This module knows nothing of MLflow: the
caller passes run ids in as lineage labels.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from t2v.launch.manifests import build_manifest
from t2v.launch.naming import (
    PYTORCHJOB_GROUP,
    PYTORCHJOB_PLURAL,
    PYTORCHJOB_VERSION,
    TRAINJOB_GROUP,
    TRAINJOB_PLURAL,
    TRAINJOB_VERSION,
)
from t2v.launch.spec import LaunchError, LaunchSpec

log = logging.getLogger(__name__)


@dataclass
class JobStatus:
    """Final state of a cluster job."""

    name: str
    namespace: str
    kind: str
    state: Literal["Succeeded", "Failed", "TimedOut", "Interrupted"]
    reason: str = ""
    message: str = ""
    elapsed_s: float = 0.0
    conditions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.state == "Succeeded"


_API = {
    "trainjob": (TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL, "TrainJob"),
    "pytorchjob": (PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL, "PyTorchJob"),
}
# condition type -> terminal state (TrainJob: Complete/Failed; PyTorchJob: Succeeded/Failed)
_TERMINAL = {"Complete": "Succeeded", "Succeeded": "Succeeded", "Failed": "Failed"}
_POD_SELECTOR = {
    "trainjob": "jobset.sigs.k8s.io/jobset-name={name}",
    "pytorchjob": "training.kubeflow.org/job-name={name}",
}


def _default_namespace() -> str:
    env = os.environ.get("T2V_NAMESPACE")
    if env:
        return env
    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if sa_ns.exists():
        return sa_ns.read_text().strip()
    return "kubeflow"


def _default_clients() -> tuple[Any, Any]:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:400]


def submit_and_wait(
    spec: LaunchSpec,
    namespace: str | None = None,
    poll_s: float = 15.0,
    kube_client: Any = None,
    *,
    core_client: Any = None,
    max_api_errors: int = 5,
) -> JobStatus:
    """Create the TrainJob/PyTorchJob, wait for a terminal condition, return its JobStatus.

    ``kube_client`` is a ``kubernetes.client.CustomObjectsApi`` (or anything with its create/get/delete
    methods); by default one is built from the in-cluster or kubeconfig credentials. On failure, timeout
    (``spec.timeout_s``, queueing included) or KeyboardInterrupt the job is deleted before the error is raised.
    The job goes to ``namespace``, else ``spec.namespace``, else :func:`_default_namespace`.
    """
    if spec.backend not in _API:
        raise LaunchError(
            f"job {spec.name}: submit_and_wait needs backend trainjob or pytorchjob, not {spec.backend!r}"
        )
    group, version, plural, kind = _API[spec.backend]
    namespace = namespace or spec.namespace or _default_namespace()
    body = build_manifest(spec)
    body["metadata"]["namespace"] = namespace
    if kube_client is None:
        kube_client, default_core = _default_clients()
        core_client = core_client or default_core
    name = spec.name
    where = f"{kind} {namespace}/{name}"

    try:
        kube_client.create_namespaced_custom_object(group, version, namespace, plural, body)
    except Exception as exc:
        code = _status_code(exc)
        hint = " (a job of that name exists: use a unique name per run)" if code == 409 else ""
        raise LaunchError(f"{where}: create failed{hint}: {_one_line(getattr(exc, 'reason', exc))}") from exc
    log.info(
        "%s created (queue=%s, %d node(s) x %d proc)",
        where,
        spec.kueue_queue,
        spec.num_nodes,
        spec.nproc_per_node,
    )

    start = time.monotonic()
    seen: set[tuple[str, str, str]] = set()
    last_progress: Any = None
    api_errors = 0
    conditions: list[dict[str, Any]] = []
    next_heartbeat = start + max(60.0, 4 * poll_s)

    def cleanup(why: str) -> None:
        _tail_pod_logs(core_client, spec.backend, namespace, name)
        try:
            kube_client.delete_namespaced_custom_object(
                group, version, namespace, plural, name, propagation_policy="Background"
            )
            log.warning("%s deleted (%s)", where, why)
        except Exception as exc:
            if _status_code(exc) != 404:
                log.error("%s: delete failed after %s: %s", where, why, _one_line(exc))

    try:
        while True:
            elapsed = time.monotonic() - start
            try:
                obj = kube_client.get_namespaced_custom_object(group, version, namespace, plural, name)
                api_errors = 0
            except Exception as exc:
                if _status_code(exc) == 404:
                    raise LaunchError(
                        f"{where} disappeared while waiting (deleted by someone else?)"
                    ) from exc
                api_errors += 1
                log.warning(
                    "%s: status read failed (%d/%d): %s", where, api_errors, max_api_errors, _one_line(exc)
                )
                if api_errors >= max_api_errors:
                    cleanup("API errors")
                    raise LaunchError(
                        f"{where}: {api_errors} API errors in a row, job deleted: {_one_line(exc)}"
                    ) from exc
                obj = None
            if obj is not None:
                status = obj.get("status") or {}
                conditions = list(status.get("conditions") or [])
                for cond in conditions:
                    key = (cond.get("type", ""), cond.get("status", ""), cond.get("reason", ""))
                    if key not in seen:
                        seen.add(key)
                        log.info(
                            "%s [%5.0fs] condition %s=%s %s %s",
                            where,
                            elapsed,
                            key[0],
                            key[1],
                            key[2],
                            _one_line(cond.get("message", "")),
                        )
                progress = status.get("trainerStatus")
                if progress and progress != last_progress:
                    last_progress = progress
                    log.info(
                        "%s [%5.0fs] progress %s%% eta %ss",
                        where,
                        elapsed,
                        progress.get("progressPercentage", "?"),
                        progress.get("estimatedRemainingSeconds", "?"),
                    )
                for cond in conditions:
                    state = _TERMINAL.get(cond.get("type", ""))
                    if state and cond.get("status") == "True":
                        result = JobStatus(
                            name=name,
                            namespace=namespace,
                            kind=kind,
                            state=state,
                            reason=cond.get("reason", ""),
                            message=_one_line(cond.get("message", "")),
                            elapsed_s=elapsed,
                            conditions=conditions,
                        )
                        if state == "Succeeded":
                            log.info("%s succeeded in %.0fs", where, elapsed)
                            return result
                        cleanup("failed")
                        raise LaunchError(
                            f"{where} failed after {elapsed:.0f}s: {result.reason or 'Failed'}: {result.message}"
                        )
            if elapsed >= spec.timeout_s:
                cleanup("timeout")
                raise LaunchError(f"{where} timed out after {spec.timeout_s}s, job deleted")
            now = time.monotonic()
            if now >= next_heartbeat:
                active = [c.get("type") for c in conditions if c.get("status") == "True"] or ["Pending"]
                log.info("%s [%5.0fs] still waiting (%s)", where, elapsed, ",".join(map(str, active)))
                next_heartbeat = now + max(60.0, 4 * poll_s)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        cleanup("interrupted")
        raise


def _tail_pod_logs(core_client: Any, backend: str, namespace: str, name: str, lines: int = 50) -> None:
    """Best effort: log the last lines of the job's first pod (rank 0) before it is deleted."""
    if core_client is None:
        return
    try:
        pods = core_client.list_namespaced_pod(
            namespace, label_selector=_POD_SELECTOR[backend].format(name=name)
        )
        items = sorted(pods.items, key=lambda p: p.metadata.name)
        if not items:
            return
        pod = items[0].metadata.name
        text = core_client.read_namespaced_pod_log(pod, namespace, tail_lines=lines)
        for line in str(text).splitlines():
            log.error("[%s] %s", pod, line)
    except Exception as exc:  # logs are a courtesy; never mask the real error
        log.debug("could not read logs of %s: %s", name, exc)
