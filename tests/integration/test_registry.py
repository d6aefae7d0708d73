"""Promotion and rollback through the model registry of a real MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import mlflow
import pytest

from t2v.registry import PromotionError, audit_trail, list_versions, promote, rollback


def _version(client, name, run_id, gate, score, **tags):
    return client.create_model_version(
        name,
        source=f"s3://bucket/{uuid.uuid4().hex}",
        run_id=run_id,
        tags={"eval.gate": gate, "eval.score_total": str(score), **tags},
    ).version.__str__()


@pytest.fixture
def registry(mlflow_server):
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    name = f"dit-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(f"reg-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment).info.run_id
    return client, name, run_id, mlflow_server


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """One local sqlite registry for the module (creating its tables takes seconds)."""
    root = tmp_path_factory.mktemp("local-registry")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("reg", artifact_location=(root / "artifacts").as_uri())
    return client, uri, experiment


@pytest.fixture
def local_registry(local_store):
    client, uri, experiment = local_store
    name = f"dit-local-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    return client, name, client.create_run(experiment).info.run_id, uri


def t2v(*args, env=None):
    return subprocess.run([sys.executable, "-m", "t2v_cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_a_server_without_authentication_cannot_promote_whatever_the_caller_claims(registry):
    """CI=true and a claimed user were all the old check asked for: a server without authentication has no
    identities, so nobody promotes through it."""
    client, name, run_id, uri = registry
    v1 = _version(client, name, run_id, "passed", 0.7)
    client.set_registered_model_alias(name, "challenger", v1)
    with pytest.raises(PromotionError, match="runs without authentication"):
        promote(name, tracking_uri=uri)
    result = t2v("promote", "--model", name, "--tracking-uri", uri, "--allow-local", env={"CI": "true", "USER": "ci", "GITHUB_ACTOR": "ci"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: promote {name}: the tracking server {uri} runs without authentication; "
        "promotion needs the basic-auth server of charts/mlflow (docs/MLOPS.md)"
    )
    with pytest.raises(PromotionError, match="runs without authentication"):
        rollback(name, tracking_uri=uri, allow_local=True)
    assert "champion" not in client.get_registered_model(name).aliases


def test_a_local_registry_promotes_only_when_told_and_says_nobody_was_authenticated(local_registry, monkeypatch):
    client, name, run_id, uri = local_registry
    monkeypatch.setenv("GITHUB_ACTOR", "somebody")
    v1 = _version(client, name, run_id, "passed", 0.7, **{"eval.champion_version": "none"})
    with pytest.raises(PromotionError, match="local registry with no identities; pass --allow-local"):
        promote(name, version=v1, tracking_uri=uri)
    record = promote(name, version=v1, tracking_uri=uri, allow_local=True)
    assert record.actor.startswith("local:") and record.authenticated is False
    v2 = _version(client, name, run_id, "passed", 0.9, **{"eval.champion_version": v1, "eval.champion_score_total": "0.7"})
    assert promote(name, version=v2, tracking_uri=uri, allow_local=True).from_version == v1
    # no gate evidence at all (a version made by hand, not by the register stage)
    bare = str(client.create_model_version(name, source="s3://bucket/bare", run_id=run_id).version)
    with pytest.raises(PromotionError, match="has no gate evidence"):
        promote(name, version=bare, tracking_uri=uri, allow_local=True)
    with pytest.raises(PromotionError, match=f"{name} v{v2} is already the champion"):
        promote(name, version=v2, tracking_uri=uri, allow_local=True)
    with pytest.raises(PromotionError, match="there is no version 99"):
        promote(name, version="99", tracking_uri=uri, allow_local=True)
    with pytest.raises(PromotionError, match=f"champion is v{v2}, not v{v1}; nothing rolled back"):
        rollback(name, tracking_uri=uri, allow_local=True, from_version=v1)
    assert rollback(name, tracking_uri=uri, allow_local=True, from_version=v2).to_version == v1
    with pytest.raises(PromotionError, match="no previous champion recorded"):
        rollback(name, tracking_uri=uri, allow_local=True)
    assert [r.action for r in audit_trail(uri, name)] == ["promote", "promote", "refuse", "refuse", "rollback"]
    # a champion moved behind the audit trail's back is flagged by `t2v models`
    client.set_registered_model_alias(name, "champion", bare)
    listing = list_versions(uri, name)
    assert listing["champion"] == bare and listing["champion_audited"] is False


def test_a_missing_model_or_alias_is_one_line(local_registry, tmp_path):
    from click.testing import CliRunner

    from t2v_cli.main import main

    client, name, run_id, uri = local_registry
    runner = CliRunner()
    out = str(tmp_path / "v.mp4")
    result = runner.invoke(main, ["generate", "a red square", "--model", "models:/no-such-model@champion", "--tracking-uri", uri, "--out", out])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: models:/no-such-model@champion: no registered model 'no-such-model' at {uri} "
        "(`t2v models --model NAME` lists what there is)"
    )
    result = runner.invoke(main, ["generate", "a red square", "--model", f"models:/{name}@champion", "--tracking-uri", uri, "--out", out])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(f"no version of {name} holds the alias 'champion' (`t2v models --model {name}` lists the aliases)")
    result = runner.invoke(main, ["models", "--model", "no-such-model", "--tracking-uri", uri])
    assert result.exit_code == 1 and result.stderr.strip() == f"Error: no registered model 'no-such-model' at {uri}"
    # an s3:// checkpoint with no credentials anywhere: in a fresh process, so no S3 client or AWS setting an
    # earlier test of the session left behind (boto3 caches both) can answer for it
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    result = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "generate", "a red square", "--model", "s3://t2v-nowhere/ckpt",
         "--tracking-uri", uri, "--out", out],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert result.stderr.startswith("Error: s3://t2v-nowhere/ckpt") and "no S3 credentials" in result.stderr


def test_alias_lookup_none_only_when_there_is_no_such_alias(registry, monkeypatch):
    from mlflow.exceptions import MlflowException

    from t2v.registry import version_by_alias

    client, name, run_id, uri = registry
    assert version_by_alias(uri, f"no-such-model-{uuid.uuid4().hex[:6]}", "champion") is None
    assert version_by_alias(uri, name, "champion") is None  # the model exists, the alias does not
    v1 = _version(client, name, run_id, "passed", 0.7)
    client.set_registered_model_alias(name, "champion", v1)
    assert version_by_alias(uri, name, "champion").version == v1
    # a tracking server that does not answer is not "no champion"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from tests.conftest import free_port

    with pytest.raises(MlflowException):
        version_by_alias(f"http://127.0.0.1:{free_port()}", name, "champion")


def test_evaluate_fails_with_the_reason_when_the_champion_cannot_be_looked_up(monkeypatch, tmp_path):
    from components.evaluate.stage import _champion_checkpoint
    from components.framework.context import StageContext
    from t2v.config import load_config
    from t2v.errors import StageError
    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    ctx = StageContext(load_config("tiny"), str(tmp_path), f"http://127.0.0.1:{free_port()}", "parent")
    with pytest.raises(StageError, match=r"looking up step-video-t2v-tiny-dit@champion: .*127\.0\.0\.1"):
        _champion_checkpoint(ctx)
    local = StageContext(load_config("tiny"), str(tmp_path), f"sqlite:///{tmp_path}/m.db", "parent")
    assert _champion_checkpoint(local) is None  # an empty registry: no champion yet

    # a champion: its checkpoint is what evaluate samples; one without the checkpoint tag is refused
    client = mlflow.MlflowClient(local.tracking_uri)
    name = "step-video-t2v-tiny-dit"
    client.create_registered_model(name)
    run_id = client.create_run(client.create_experiment("champion", artifact_location=(tmp_path / "artifacts").as_uri())).info.run_id
    tagged = client.create_model_version(name, source="s3://b/ckpt", run_id=run_id, tags={"t2v.checkpoint_uri": "s3://b/ckpt"})
    client.set_registered_model_alias(name, "champion", tagged.version)
    assert _champion_checkpoint(local) == (str(tagged.version), "s3://b/ckpt")
    bare = client.create_model_version(name, source="s3://b/other", run_id=run_id)
    client.set_registered_model_alias(name, "champion", bare.version)
    with pytest.raises(StageError, match="has no t2v.checkpoint_uri tag"):
        _champion_checkpoint(local)
