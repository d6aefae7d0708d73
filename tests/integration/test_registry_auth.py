"""The registry only CI can promote in, against a real MLflow server with its basic-auth app on.

One server for the module, started the way charts/mlflow starts it (``--app-name basic-auth``, the
chart's ``files/basic_auth.ini``) and given its identities by the chart's own bootstrap script
(``files/bootstrap_access.py``): the CI identity (MANAGE on the registered models), the pipeline identity
(EDIT: registers versions, sets ``challenger``) and a reviewer (READ).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException

from t2v import registry, storage
from tests.conftest import BIN, REPO, _stop, free_port, wait_http

CHART_FILES = REPO / "charts" / "mlflow" / "files"
ADMIN = ("admin", "admin-" + uuid.uuid4().hex)
CI = ("t2v-ci", "ci-" + uuid.uuid4().hex)
PIPELINE = ("t2v-pipeline", "pipe-" + uuid.uuid4().hex)
REVIEWER = ("reviewer", "rev-" + uuid.uuid4().hex)
PASSWORDS = [ADMIN[1], CI[1], PIPELINE[1], REVIEWER[1]]
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _bootstrap_module():
    spec = importlib.util.spec_from_file_location("bootstrap_access", CHART_FILES / "bootstrap_access.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    ini.write_text((CHART_FILES / "basic_auth.ini").read_text() + f"database_uri = sqlite:///{root}/auth.db\n")
    port = free_port()
    log = root / "server.log"
    env = {
        **{k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV},
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner processes (GenAI scorers only)
    }
    cmd = [
        str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    saved = {k: os.environ.pop(k) for k in CREDENTIAL_ENV if k in os.environ}
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", 120, proc, log)
        yield {"uri": uri, "root": root, "log": log}
    finally:
        _stop(proc)
        os.environ.update(saved)


@pytest.fixture
def models(server, monkeypatch):
    """Fresh DiT and VAE registered models, created and granted by the chart's bootstrap script."""
    suffix = uuid.uuid4().hex[:6]
    names = {"dit": f"dit-{suffix}", "vae": f"vae-{suffix}"}
    reviewers = server["root"] / f"reviewers-{suffix}"
    reviewers.write_text(f"{REVIEWER[0]}:{REVIEWER[1]}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    for key, value in {
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "T2V_CI_USERNAME": CI[0], "T2V_CI_PASSWORD": CI[1],
        "T2V_PIPELINE_USERNAME": PIPELINE[0], "T2V_PIPELINE_PASSWORD": PIPELINE[1],
        "T2V_REVIEWERS_FILE": str(reviewers), "T2V_REGISTERED_MODELS": ",".join(names.values()),
    }.items():
        monkeypatch.setenv(key, value)
    assert _bootstrap_module().main() == 0
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "T2V_CI_PASSWORD", "T2V_PIPELINE_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key)
    return names


def as_user(monkeypatch, user: tuple[str, str] | None) -> None:
    for key in CREDENTIAL_ENV:
        monkeypatch.delenv(key, raising=False)
    if user:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


def t2v(*args, user=None, env=None, cwd=None):
    """The CLI in a process of its own (what a CI job runs; its logs are real)."""
    base = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    if user:
        base.update(MLFLOW_TRACKING_USERNAME=user[0], MLFLOW_TRACKING_PASSWORD=user[1])
    return subprocess.run(
        [sys.executable, "-m", "t2v_cli", *args], capture_output=True, text=True, timeout=300,
        env={**base, **(env or {})}, cwd=cwd,
    )


def cli(*args, user=None, env=None):
    """The same CLI in this process (click's runner): seconds cheaper than a fresh interpreter."""
    from click.testing import CliRunner

    from t2v_cli.main import main

    creds = dict(zip(CREDENTIAL_ENV, user)) if user else dict.fromkeys(CREDENTIAL_ENV)
    result = CliRunner().invoke(main, list(args), env={**creds, **(env or {})}, catch_exceptions=False)
    result.returncode = result.exit_code
    return result


# -------------------------------------------------------------------------------- a pipeline's versions


def _manifest(tmp: Path, stage: str, **fields) -> str:
    uri = (tmp / f"{stage}-{uuid.uuid4().hex[:6]}.json").as_uri()
    storage.write_json(uri, {"stage": stage, "manifest_uri": uri, "fingerprint": uuid.uuid4().hex, "files": {}, "summary": {}, **fields})
    return uri


def _evaluation(score, champion=None, champion_score=None, win_rate=None, high=None, gate="passed"):
    summary = {
        "score_total": score, "untrained_score_total": 0.15, "scores": {"total": score, "color": score},
        "untrained_scores": {"total": 0.15, "color": 0.2}, "gate_passed": gate == "passed", "gate_reason": gate,
        "gate_notes": ["no champion yet"] if champion is None else [f"champion {champion_score}"],
        "champion_version": champion, "champion_score_total": champion_score,
    }
    if champion is not None:
        summary["champion_comparison"] = {"wins": 3, "ties": 0, "losses": 1, "win_rate": win_rate, "win_rate_ci95": [0.1, high]}
    return summary


def register(tmp: Path, names: dict, uri: str, evaluation: dict, tracking_uri: str | None = None) -> dict:
    """The register stage itself (``t2v stage register``, in this process) on hand-made input manifests."""
    from pipelines.stage_runner import run_stage
    from t2v.config import load_config

    cfg = load_config("tiny", [f"registry.dit_model_name={names['dit']}", f"registry.vae_model_name={names['vae']}"])
    tag = uuid.uuid4().hex[:6]
    inputs = {
        "dit": _manifest(tmp, "dpo", checkpoint_uri=(tmp / tag / "dit").as_uri(), init_checkpoint_uri=(tmp / "t2v").as_uri()),
        "vae": _manifest(tmp, "train-vae", checkpoint_uri=(tmp / tag / "vae").as_uri()),
        "evaluation": _manifest(tmp, "evaluate", summary=evaluation),
        "clips": _manifest(tmp, "curate"),
    }
    manifest = run_stage(cfg, "register", f"run-{tag}", tracking_uri or uri, tmp.as_uri(), None, inputs)
    return manifest["summary"]


def champion(client, name):
    return registry.version_by_alias(None, name, "champion") and client.get_model_version_by_alias(name, "champion").version


# ------------------------------------------------------------------------------------------------ tests


def test_unauthenticated_requests_are_refused_and_change_nothing(server, models, monkeypatch, tmp_path):
    uri = server["uri"]
    as_user(monkeypatch, PIPELINE)
    register(tmp_path, models, uri, _evaluation(0.7))
    as_user(monkeypatch, CI)
    registry.promote(models["dit"], tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    audit = {k for k in client.get_registered_model(models["dit"]).tags if k.startswith(registry.AUDIT_PREFIX)}
    assert audit

    api = f"{uri}/api/2.0/mlflow"
    assert requests.get(f"{api}/registered-models/get", params={"name": models["dit"]}, timeout=30).status_code == 401
    moved = requests.post(f"{api}/registered-models/alias", json={"name": models["dit"], "alias": "champion", "version": "1"}, timeout=30)
    deleted = requests.delete(f"{api}/registered-models/delete-tag", json={"name": models["dit"], "key": sorted(audit)[0]}, timeout=30)
    assert (moved.status_code, deleted.status_code) == (401, 401)
    # the CLI without credentials: one line, nothing changed
    result = cli("promote", "--model", models["dit"], "--tracking-uri", uri, env={"CI": "true"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: the tracking server http://127.0.0.1")
    assert "refused the credentials" in result.stderr
    assert champion(client, models["dit"]) == "1"
    assert audit <= set(client.get_registered_model(models["dit"]).tags)


def test_a_reviewer_cannot_move_champion_whatever_they_claim(server, models, monkeypatch, tmp_path):
    uri = server["uri"]
    as_user(monkeypatch, PIPELINE)
    register(tmp_path, models, uri, _evaluation(0.7))
    as_user(monkeypatch, CI)
    registry.promote(models["dit"], tracking_uri=uri)
    as_user(monkeypatch, PIPELINE)
    register(tmp_path, models, uri, _evaluation(0.9, champion="1", champion_score=0.7, win_rate=0.9, high=0.99))
    as_user(monkeypatch, REVIEWER)
    client = mlflow.MlflowClient(uri)
    before = client.get_registered_model(models["dit"])

    # the reviewer, claiming to be CI in every way the old check believed
    result = cli("promote", "--model", models["dit"], "--tracking-uri", uri, user=REVIEWER,
                 env={"CI": "true", "USER": CI[0], "GITHUB_ACTOR": CI[0], "T2V_PROMOTED_BY": CI[0]})
    assert result.returncode == 1, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: promote {models['dit']}: the tracking server") and f"refused {REVIEWER[0]} (permission denied)" in last
    # and straight through the MLflow client: the alias, a gate-failed version, an audit tag
    with pytest.raises(MlflowException, match="403"):
        client.set_registered_model_alias(models["dit"], "champion", "2")
    audit_key = next(k for k in before.tags if k.startswith(registry.AUDIT_PREFIX))
    with pytest.raises(MlflowException, match="403"):
        client.delete_registered_model_tag(models["dit"], audit_key)
    with pytest.raises(MlflowException, match="403"):
        client.set_model_version_tag(models["dit"], "2", registry.TAG_GATE, "passed")
    after = client.get_registered_model(models["dit"])
    assert after.aliases == before.aliases and after.aliases["champion"] == "1"
    assert after.tags == before.tags  # not even a "refused" record: the server refused the reviewer first
    # reading is what a reviewer may do
    listing = registry.list_versions(uri, models["dit"])
    assert [v["version"] for v in listing["versions"]] == ["2", "1"] and listing["champion"] == "1"


def test_register_challenger_promote_refuse_rollback_each_audited(server, models, monkeypatch, tmp_path):
    uri = server["uri"]
    dit = models["dit"]
    client = mlflow.MlflowClient(uri)
    as_user(monkeypatch, PIPELINE)
    first = register(tmp_path, models, uri, _evaluation(0.70))
    assert first["dit_version"] == "1" and first["aliases"] == ["challenger"]
    # the pipeline identity may set challenger, and only the server's identities count
    assert registry.whoami(uri).username == PIPELINE[0]

    # promote (accepted), through the CLI as CI, with a claimed actor that must not be believed
    result = t2v("promote", "--model", dit, "--tracking-uri", uri, "--reason", "first release", user=CI,
                 env={"GITHUB_ACTOR": "mallory", "USER": "mallory", "T2V_PROMOTED_BY": "octocat"})
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["action"], record["from_version"], record["to_version"]) == ("promote", None, "1")
    assert record["actor"] == CI[0] and record["authenticated"] is True and record["requested_by"] == "octocat"
    assert record["reason"] == "first release"

    as_user(monkeypatch, PIPELINE)
    register(tmp_path, models, uri, _evaluation(0.80, champion="1", champion_score=0.70, win_rate=0.75, high=0.95))
    as_user(monkeypatch, CI)
    second = registry.promote(dit, tracking_uri=uri)
    assert (second.from_version, second.to_version) == ("1", "2")

    # a worse version: its gate passed (within gate_max_regression), but it scores below the champion
    as_user(monkeypatch, PIPELINE)
    register(tmp_path, models, uri, _evaluation(0.75, champion="2", champion_score=0.80, win_rate=0.25, high=0.45))
    result = cli("promote", "--model", dit, "--tracking-uri", uri, user=CI)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: refused: {dit} v3 scores 0.750, below champion v2's 0.800 on the same prompts; "
        f"{dit} v3 loses to champion v2: win rate 0.25, 95% interval below 0.5"
    )
    assert client.get_model_version_by_alias(dit, "champion").version == "2"
    # one that was evaluated against another champion is refused too, and a gate-failed one
    as_user(monkeypatch, PIPELINE)
    register(tmp_path, models, uri, _evaluation(0.95, champion="1", champion_score=0.70, win_rate=0.9, high=0.99))
    register(tmp_path, models, uri, _evaluation(0.2, gate="score 0.200 < gate_min_score 0.5"))
    as_user(monkeypatch, CI)
    with pytest.raises(registry.PromotionError, match=r"v4 was evaluated against v1, but v2 is champion now"):
        registry.promote(dit, version="4", tracking_uri=uri)
    with pytest.raises(registry.PromotionError, match=r"v5: its evaluation gate did not pass \(score 0.200"):
        registry.promote(dit, version="5", tracking_uri=uri, allow_worse=True)

    result = cli("rollback", "--model", dit, "--tracking-uri", uri, "--reason", "v2 misbehaves in serving", user=CI)
    assert result.returncode == 0, result.stderr
    back = json.loads(result.stdout[result.stdout.index("{"):])
    assert (back["action"], back["from_version"], back["to_version"], back["actor"]) == ("rollback", "2", "1", CI[0])
    assert client.get_model_version_by_alias(dit, "champion").version == "1"

    steps = [(r.action, r.from_version, r.to_version, r.actor) for r in registry.audit_trail(uri, dit)]
    assert steps == [
        ("register", None, "1", PIPELINE[0]), ("challenger", None, "1", PIPELINE[0]),
        ("promote", None, "1", CI[0]),
        ("register", None, "2", PIPELINE[0]), ("challenger", "1", "2", PIPELINE[0]),
        ("promote", "1", "2", CI[0]),
        ("register", None, "3", PIPELINE[0]), ("challenger", "2", "3", PIPELINE[0]),
        ("refuse", "2", "3", CI[0]),
        ("register", None, "4", PIPELINE[0]), ("challenger", "3", "4", PIPELINE[0]),
        ("register", None, "5", PIPELINE[0]),
        ("refuse", "2", "4", CI[0]), ("refuse", "2", "5", CI[0]),
        ("rollback", "2", "1", CI[0]),
    ]
    trail = registry.audit_trail(uri, dit)
    assert all(r.authenticated and r.at and r.reason for r in trail)
    assert "below champion v2's 0.800" in trail[8].reason

    # t2v models: versions, aliases and lineage; the card of a version
    result = cli("models", "--model", dit, "--tracking-uri", uri, "--audit", user=REVIEWER)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == dit
    row = next(line.split() for line in lines if line.split()[:1] == ["1"])
    assert row[1] == "champion" and row[2] == "passed" and row[3] == "0.700"
    assert any("rollback" in line and f"by {CI[0]}" in line and "2 -> 1" in line for line in lines)
    card = client.get_model_version(dit, "2").description
    for needle in ("data manifest", "config hash", "pipeline version", "git sha", "| color | 0.800 | 0.200 |",
                   "against champion v1: 0.700", "win rate 0.750", "gate: **passed**"):
        assert needle in card, needle
    vae_card = client.get_model_version(models["vae"], "2").description
    assert "Video-VAE" in vae_card and f"{tmp_path.as_uri()}/" in vae_card


def test_an_adapter_names_its_base_model(server, models, monkeypatch, tmp_path):
    from pipelines.stage_runner import run_stage
    from t2v.config import load_config

    as_user(monkeypatch, PIPELINE)
    cfg = load_config("tiny", [f"registry.dit_model_name={models['dit']}", f"registry.vae_model_name={models['vae']}"])
    adapter = tmp_path / "lora" / "adapter"  # peft's layout: adapter_config.json beside the weights
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    inputs = {
        "dit": _manifest(tmp_path, "dpo", checkpoint_uri=adapter.as_uri(), base_model=f"models:/{models['dit']}/7"),
        "vae": _manifest(tmp_path, "train-vae", checkpoint_uri=(tmp_path / "lora" / "vae").as_uri()),
        "evaluation": _manifest(tmp_path, "evaluate", summary=_evaluation(0.7)),
        "clips": _manifest(tmp_path, "curate"),
    }
    run_stage(cfg, "register", "lora-run", server["uri"], tmp_path.as_uri(), None, inputs)
    version = mlflow.MlflowClient(server["uri"]).get_model_version(models["dit"], "1")
    assert version.tags[registry.TAG_BASE_MODEL] == f"models:/{models['dit']}/7"
    assert version.tags[registry.TAG_ADAPTER] == "lora"
    assert f"a LoRA adapter on **models:/{models['dit']}/7**" in version.description
    assert registry.list_versions(server["uri"], models["dit"])["versions"][0]["base_model"] == f"models:/{models['dit']}/7"


def test_no_credential_in_logs_params_tags_job_files_or_artifacts(server, models, tmp_path):
    """The pipeline identity's password inside the tracking URI, as a careless user passes it: the stage
    works, and the password is nowhere it wrote or logged."""
    host = server["uri"].removeprefix("http://")
    secret_uri = f"http://{PIPELINE[0]}:{PIPELINE[1]}@{host}"
    root = tmp_path / "data"
    tag = uuid.uuid4().hex[:6]
    inputs = {
        "dit": _manifest(tmp_path, "dpo", checkpoint_uri=(tmp_path / tag / "dit").as_uri()),
        "vae": _manifest(tmp_path, "train-vae", checkpoint_uri=(tmp_path / tag / "vae").as_uri()),
        "evaluation": _manifest(tmp_path, "evaluate", summary=_evaluation(0.7)),
        "clips": _manifest(tmp_path, "curate"),
    }
    result = t2v(
        "-v", "stage", "register", "--run-name", "leak-check", "--root", root.as_uri(), "--tracking-uri", secret_uri,
        "--set", f"registry.dit_model_name={models['dit']}", "--set", f"registry.vae_model_name={models['vae']}",
        *[f"--input={k}={v}" for k, v in inputs.items()], cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout[result.stdout.index("{\n"):])["summary"]["dit_version"] == "1"
    # what a training stage would launch with that URI in its environment
    from t2v.launch import LaunchSpec, build_manifest
    from t2v.secrets import adopt_uri_credentials, redact

    job = LaunchSpec(name="leak", image="img:1", module="trainer.train", backend="trainjob", env={"MLFLOW_TRACKING_URI": secret_uri})
    manifest = json.dumps(build_manifest(job))
    with pytest.raises(ValueError, match=r"AWS_SECRET_ACCESS_KEY.*in clear.*secret_env"):
        LaunchSpec(name="leak", module="trainer.train", env={"AWS_SECRET_ACCESS_KEY": "s3cr3t-value-xyz"})
    assert server["uri"] in manifest and "mlflow-credentials" in manifest
    assert redact(f"see {secret_uri}/x?X-Amz-Signature=abc123&b=1") == f"see http://{PIPELINE[0]}:***@{host}/x?X-Amz-Signature=***&b=1"
    saved = {k: os.environ.pop(k) for k in CREDENTIAL_ENV if k in os.environ}
    try:
        assert adopt_uri_credentials(secret_uri) == server["uri"] and os.environ["MLFLOW_TRACKING_PASSWORD"] == PIPELINE[1]
    finally:
        for k in CREDENTIAL_ENV:
            os.environ.pop(k, None)
        os.environ.update(saved)

    # everything the run wrote or the server stored
    client = mlflow.MlflowClient(server["uri"])
    os.environ.update(MLFLOW_TRACKING_USERNAME=REVIEWER[0], MLFLOW_TRACKING_PASSWORD=REVIEWER[1])
    try:
        texts = {"stdout": result.stdout, "stderr": result.stderr, "launch manifest": manifest}
        for path in root.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_text(errors="replace")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
        leak_runs = [r for r in runs if r.data.tags.get("t2v.run_name") == "leak-check"]
        assert len(leak_runs) == 2  # the parent and the stage's run
        for run in leak_runs:
            texts[f"run {run.info.run_id} params+tags"] = json.dumps([run.data.params, run.data.tags])
            local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
            for path in local.rglob("*"):
                if path.is_file():
                    texts[f"artifact {path.relative_to(local)}"] = path.read_text(errors="replace")
        for name in models.values():
            reg = client.get_registered_model(name)
            texts[f"model {name}"] = json.dumps(reg.tags)
            for v in client.search_model_versions(f"name = '{name}'"):
                texts[f"{name} v{v.version}"] = json.dumps([v.tags, v.description, v.source])
        assert any("artifact" in k for k in texts) and any(str(root) in k for k in texts)
        assert "INFO" in result.stdout + result.stderr  # the log lines were there to check
        for where, text in texts.items():
            for password in PASSWORDS + ["s3cr3t-value-xyz"]:
                assert password not in text, f"a credential in {where}"
    finally:
        for k in CREDENTIAL_ENV:
            os.environ.pop(k, None)
