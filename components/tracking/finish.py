"""Close the pipeline's MLflow parent run (the body of the pipeline's exit handler)."""

from __future__ import annotations

import logging

from t2v import tracking

log = logging.getLogger(__name__)


def finish(tracking_uri: str, parent_run_id: str, state: str, error_message: str = "") -> str:
    """Map the KFP final state to an MLflow run status and record it on the parent run."""
    import mlflow

    status = "FINISHED" if state in ("SUCCEEDED", "SUCCESS") else "FAILED"
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    client.set_tag(parent_run_id, "t2v.pipeline_state", state)
    if error_message:
        client.set_tag(parent_run_id, "t2v.pipeline_error", error_message[:5000])
    try:  # the description a reviewer reads first; a failure to write it must not hide the run's state
        client.set_tag(parent_run_id, tracking.TAG_NOTE, tracking.parent_description(client.get_run(parent_run_id), state))
    except Exception as exc:  # noqa: BLE001
        log.warning("could not write the parent run's description: %s", exc)
    tracking.finish_run(tracking_uri, parent_run_id, status)
    print(f"parent run {parent_run_id}: {status} (pipeline {state})", flush=True)
    return status
