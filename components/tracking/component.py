"""KFP component: the exit handler that closes the MLflow parent run with the pipeline's final status."""

from kfp import dsl

from t2v.images import project_image


@dsl.component(base_image=project_image(), install_kfp_package=False)
def finish_tracking(tracking_uri: str, parent_run_id: str, status: dsl.PipelineTaskFinalStatus):
    """Runs whatever happened inside the pipeline: marks the parent run FINISHED or FAILED."""
    from components.tracking.finish import finish

    finish(tracking_uri, parent_run_id, status.state, status.error_message)
