"""Create the tracking server's identities and their registry permissions (idempotent).

Run by the chart's post-install/upgrade Job (templates/auth-bootstrap-job.yaml) as the admin, and by
tests/integration/test_registry_auth.py against a real server. Reads everything from the environment:

    MLFLOW_TRACKING_URI                          the server
    MLFLOW_AUTH_ADMIN_USERNAME / _PASSWORD       the admin (the auth app's bootstrap user)
    T2V_CI_USERNAME / T2V_CI_PASSWORD            the CI identity: MANAGE on every registered model
    T2V_PIPELINE_USERNAME / T2V_PIPELINE_PASSWORD  the pipeline identity: EDIT (registers, sets challenger)
    T2V_REVIEWERS_FILE                           lines `username:password`: reviewers, READ only
    T2V_REGISTERED_MODELS                        comma-separated registered model names

The registered models are created by the CI identity, so it holds MANAGE on them as their creator.
Nothing secret is printed.
"""

from __future__ import annotations

import os
import sys


def _as(username: str, password: str) -> None:
    os.environ["MLFLOW_TRACKING_USERNAME"] = username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def _create_user(auth, username: str, password: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        auth.create_user(username, password)
        return True
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(username, password)  # keep the Secret the truth
        return False


def _grant(auth, username: str, model: str, permission: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, "registered_model", model, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # the creator's MANAGE, or a re-run
            raise


def bootstrap(uri: str, admin: tuple[str, str], ci: tuple[str, str], pipeline: tuple[str, str] | None,
              reviewers: list[tuple[str, str]], models: list[str]) -> list[str]:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    done = []
    auth = AuthServiceClient(uri)
    _as(*admin)
    for user, password in [ci, *([pipeline] if pipeline else []), *reviewers]:
        done.append(f"user {user}: {'created' if _create_user(auth, user, password) else 'exists'}")
    _as(*ci)
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    for name in models:
        try:
            client.create_registered_model(name, description="Step-Video-T2V training system (t2v)")
            done.append(f"model {name}: created by {ci[0]} (MANAGE)")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            done.append(f"model {name}: exists")
    _as(*admin)
    for name in models:
        _grant(auth, ci[0], name, "MANAGE")
        if pipeline:
            _grant(auth, pipeline[0], name, "EDIT")
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(key, None)
    return done


def _pair(prefix: str) -> tuple[str, str] | None:
    user, password = os.environ.get(f"{prefix}_USERNAME"), os.environ.get(f"{prefix}_PASSWORD")
    return (user, password) if user and password else None


def _wait_for(uri: str, timeout_s: float = 300.0) -> None:
    """The Job starts with the server's rollout: wait until its /health answers."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def main() -> int:
    uri = os.environ["MLFLOW_TRACKING_URI"]
    _wait_for(uri)
    admin = (os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin"), os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"])
    ci = _pair("T2V_CI")
    if ci is None:
        print("T2V_CI_USERNAME and T2V_CI_PASSWORD are required", file=sys.stderr)
        return 2
    reviewers = []
    if os.environ.get("T2V_REVIEWERS_FILE") and os.path.exists(os.environ["T2V_REVIEWERS_FILE"]):
        with open(os.environ["T2V_REVIEWERS_FILE"]) as handle:
            for line in handle:
                user, sep, password = line.strip().partition(":")
                if user and sep and password:
                    reviewers.append((user, password))
    models = [m.strip() for m in os.environ.get("T2V_REGISTERED_MODELS", "").split(",") if m.strip()]
    for line in bootstrap(uri, admin, ci, _pair("T2V_PIPELINE"), reviewers, models):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
