"""Promotion and rollback through the model registry of a real MLflow server."""

from __future__ import annotations

import subprocess
import sys
import uuid

import mlflow
import pytest

from t2v.registry import PromotionError, promote, rollback


def _version(client, name, run_id, gate, score):
    return client.create_model_version(
        name,
        source=f"s3://bucket/{uuid.uuid4().hex}",
        run_id=run_id,
        tags={"eval.gate": gate, "eval.score_total": str(score)},
    ).version


@pytest.fixture
def registry(mlflow_server, monkeypatch):
    monkeypatch.setenv("CI", "true")
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.MlflowClient()
    name = f"dit-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(f"reg-{uuid.uuid4().hex[:6]}")
    run_id = client.create_run(experiment).info.run_id
    return client, name, run_id, mlflow_server


def test_promote_challenger_then_rollback(registry):
    client, name, run_id, uri = registry
    v1 = _version(client, name, run_id, "passed", 0.7)
    client.set_registered_model_alias(name, "challenger", v1)
    record = promote(name, tracking_uri=uri, actor="ci-bot")
    assert record.version == v1 and record.previous_version is None
    assert client.get_model_version_by_alias(name, "champion").version == v1

    v2 = _version(client, name, run_id, "passed", 0.8)
    client.set_registered_model_alias(name, "challenger", v2)
    record = promote(name, tracking_uri=uri, actor="ci-bot")
    assert record.previous_version == v1
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == v2 and champion.tags["t2v.promoted_by"] == "ci-bot"
    audit = [k for k in client.get_registered_model(name).tags if k.startswith("t2v.audit.")]
    assert len(audit) >= 1

    back = rollback(name, tracking_uri=uri)
    assert back.version == v1
    assert client.get_model_version_by_alias(name, "champion").version == v1


def test_promotion_checks(registry):
    client, name, run_id, uri = registry
    failed = _version(client, name, run_id, "score 0.1 < gate_min_score 0.5", 0.1)
    with pytest.raises(PromotionError, match="gate did not pass"):
        promote(name, version=failed, tracking_uri=uri)
    good = _version(client, name, run_id, "passed", 0.9)
    promote(name, version=good, tracking_uri=uri)
    worse = _version(client, name, run_id, "passed", 0.6)
    with pytest.raises(PromotionError, match="below the champion"):
        promote(name, version=worse, tracking_uri=uri)
    with pytest.raises(PromotionError, match="no version holds the alias"):
        promote(name, from_alias="nobody", tracking_uri=uri)


def test_promote_refuses_outside_ci(registry, monkeypatch):
    _, name, _, uri = registry
    monkeypatch.setenv("CI", "")
    result = subprocess.run(
        [sys.executable, "-m", "t2v_cli", "promote", "--model", name, "--tracking-uri", uri],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: promotion runs in CI")


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
