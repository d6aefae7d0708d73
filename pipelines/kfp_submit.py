"""Publish a compiled pipeline to a KFP backend and start a run there, with ``kfp.Client``.

:func:`publish` makes sure the pipeline exists (by name) and holds a version named by the pipeline
version (``<package version>+g<sha>``): a version already uploaded under that name is reused, never
duplicated. :func:`start_run` creates the run in a named experiment (created when missing) with its
parameters and returns the run's id and URL. ``t2v submit`` (``pipelines.runner.submit``) calls both;
``tests/integration/test_submit.py`` runs them against a stand-in of the KFP REST API that checks each
request against the ``kfp-server-api`` models.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2v.errors import UserError
from t2v.secrets import redact

log = logging.getLogger(__name__)


class SubmitError(UserError, RuntimeError):
    """The KFP backend refused or could not be reached; the message names the host and the call."""


@dataclass
class Published:
    pipeline_id: str
    pipeline_name: str
    version_id: str
    version_name: str
    reused_version: bool
    url: str


@dataclass
class StartedRun:
    run_id: str
    run_name: str
    experiment_id: str
    experiment: str
    url: str


def client(host: str, ui_host: str | None = None, token: str | None = None):
    """A ``kfp.Client`` for ``host`` (its REST API) and ``ui_host`` (where run links point; default host)."""
    import warnings

    import kfp

    with warnings.catch_warnings(), _calls(host, "connecting"):
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, ui_host=ui_host, existing_token=token)


def _ui(kfp_client) -> str:
    return kfp_client._get_url_prefix().rstrip("/")


@contextlib.contextmanager
def _calls(host: str, what: str):
    """kfp.Client prints links and raises ApiException with whole HTTP dumps: keep stdout clean and turn
    a refusal into one line."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    except ApiException as exc:
        body = (exc.body or b"").decode() if isinstance(exc.body, bytes) else str(exc.body or "")
        try:
            body = json.loads(body).get("message") or json.loads(body).get("error") or body
        except (ValueError, AttributeError):
            pass
        raise SubmitError(redact(f"KFP {host}: {what} failed: HTTP {exc.status} {exc.reason}: {' '.join(str(body).split())[:300]}")) from None
    except (OSError, HTTPError) as exc:  # the host did not answer, or hung up
        raise SubmitError(redact(f"KFP {host}: {what} failed: {' '.join(str(exc).split())[:300]}")) from None
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("kfp: %s", line)


def _version_named(kfp_client, pipeline_id: str, name: str):
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    result = kfp_client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=100, filter=flt)
    for version in result.pipeline_versions or []:
        if version.display_name == name:
            return version
    return None


def publish(kfp_client, host: str, package: str | Path, pipeline_name: str, version_name: str, description: str = "") -> Published:
    """Upload ``package`` as ``pipeline_name`` (created if missing) version ``version_name`` (reused if a
    version of that name exists)."""
    package = str(package)
    with _calls(host, f"looking up pipeline {pipeline_name!r}"):
        pipeline_id = kfp_client.get_pipeline_id(pipeline_name)
    reused = False
    if pipeline_id is None:
        with _calls(host, f"uploading pipeline {pipeline_name!r}"):
            created = kfp_client.upload_pipeline(package, pipeline_name=pipeline_name, description=description or None)
        pipeline_id = created.pipeline_id
        # the upload made a first version named after the pipeline; ours is named by the pipeline version
    with _calls(host, f"listing the versions of {pipeline_name!r}"):
        existing = _version_named(kfp_client, pipeline_id, version_name)
    if existing is not None:
        version_id, reused = existing.pipeline_version_id, True
    else:
        with _calls(host, f"uploading version {version_name!r} of {pipeline_name!r}"):
            version = kfp_client.upload_pipeline_version(
                package, pipeline_version_name=version_name, pipeline_id=pipeline_id, description=description or None
            )
        version_id = version.pipeline_version_id
    url = f"{_ui(kfp_client)}/#/pipelines/details/{pipeline_id}/version/{version_id}"
    log.info("pipeline %s version %s (%s): %s", pipeline_name, version_name, "reused" if reused else "uploaded", url)
    return Published(pipeline_id, pipeline_name, version_id, version_name, reused, url)


def start_run(
    kfp_client,
    host: str,
    published: Published,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    service_account: str | None = None,
    enable_caching: bool = False,
) -> StartedRun:
    """Create the run of ``published`` in ``experiment`` (created when missing) with ``params``."""
    with _calls(host, f"finding or creating experiment {experiment!r}"):
        exp = kfp_client.create_experiment(experiment)
    with _calls(host, f"creating run {run_name!r}"):
        run = kfp_client.run_pipeline(
            experiment_id=exp.experiment_id,
            job_name=run_name,
            pipeline_id=published.pipeline_id,
            version_id=published.version_id,
            params=params,
            enable_caching=enable_caching,
            service_account=service_account,
        )
    url = f"{_ui(kfp_client)}/#/runs/details/{run.run_id}"
    return StartedRun(run.run_id, run_name, exp.experiment_id, experiment, url)

