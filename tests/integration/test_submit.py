"""``t2v submit`` against a stand-in of the KFP REST API (no KFP backend runs here).

The stand-in is a small HTTP server that answers the v2beta1 calls ``kfp.Client`` makes and checks every
request body and response against the ``kfp-server-api`` models: an unknown field, a wrong type, a bad
enum value or a run whose parameters are not the uploaded pipeline's inputs is answered 400, as the real
API server would refuse it.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
import pytest
import yaml
from kfp_server_api import models

API = "/apis/v2beta1"


class Invalid(ValueError):
    pass


def check(model: str, data, path: str = "") -> None:
    """``data`` (JSON) is a valid ``model`` of kfp-server-api: known fields only, each of its declared type."""
    cls = getattr(models, model)
    if getattr(cls, "allowable_values", None):  # an enum: its name, or its number (protobuf JSON)
        if isinstance(data, int) and not isinstance(data, bool) and 0 <= data < len(cls.allowable_values):
            return
        if data not in cls.allowable_values:
            raise Invalid(f"{path or model}: {data!r} is not one of {model}")
        return
    if not isinstance(data, dict):
        raise Invalid(f"{path or model}: expected an object for {model}")
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    # the API server reads protobuf JSON: a field's lowerCamelCase name is the same field
    data = {key if key in by_json else re.sub(r"([A-Z])", r"_\1", key).lower(): value for key, value in data.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise Invalid(f"{path or model}: unknown field(s) {unknown} for {model}")
    for key, value in data.items():
        if value is not None:
            check_type(cls.openapi_types[by_json[key]], value, f"{path}.{key}".lstrip("."))


def check_type(kind: str, value, path: str) -> None:
    if kind == "str" or kind == "datetime":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "object":
        ok = True
    elif kind.startswith("list["):
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list")
        for i, item in enumerate(value):
            check_type(kind[5:-1], item, f"{path}[{i}]")
        return
    elif kind.startswith("dict("):
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected a map")
        inner = kind[len("dict(str, "):-1]
        for k, item in value.items():
            check_type(inner, item, f"{path}.{k}")
        return
    else:
        check(kind, value, path)
        return
    if not ok:
        raise Invalid(f"{path}: {value!r} is not a {kind}")


class StandIn:
    """The state of a KFP backend: pipelines, versions (with their uploaded specs), experiments, runs."""

    def __init__(self):
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.specs: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.calls: list[str] = []
        self.refused: list[str] = []

    @staticmethod
    def _filter_name(query) -> str | None:
        raw = (query.get("filter") or [None])[0]
        if not raw:
            return None
        flt = json.loads(raw)
        check("V2beta1Filter", flt, "filter")
        (predicate,) = flt["predicates"]
        operation = predicate["operation"]
        if isinstance(operation, int):
            operation = models.V2beta1PredicateOperation.allowable_values[operation]
        assert predicate["key"] == "display_name" and operation == "EQUALS", predicate
        return predicate.get("string_value", predicate.get("stringValue"))

    def _upload(self, handler, query) -> dict:
        ctype = handler.headers["Content-Type"]
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in message.iter_parts()}
        if "uploadfile" not in parts:
            raise Invalid("upload: no uploadfile part")
        spec = next(iter(yaml.safe_load_all(parts["uploadfile"])), None)  # the pipeline spec, then the platform spec
        if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
            raise Invalid("upload: the file is not a compiled KFP pipeline spec")
        name = (query.get("name") or [None])[0]
        if not name:
            raise Invalid("upload: no name")
        return {"name": name, "spec": spec, "description": (query.get("description") or [""])[0]}

    def handle(self, handler, method: str):
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        path = url.path
        self.calls.append(f"{method} {path}")
        if method == "GET" and path == f"{API}/healthz":
            return 200, ("V2beta1GetHealthzResponse", {"multi_user": False})
        if method == "POST" and path == f"{API}/pipelines/upload":
            up = self._upload(handler, query)
            if any(p["display_name"] == up["name"] for p in self.pipelines.values()):
                return 409, {"error": "exists", "code": 6, "message": f"pipeline {up['name']} already exists"}
            pid = str(uuid.uuid4())
            self.pipelines[pid] = {"pipeline_id": pid, "display_name": up["name"], "name": up["name"],
                                   "description": up["description"], "created_at": "2026-12-01T00:00:00Z"}
            vid = str(uuid.uuid4())  # the real server makes a first version named after the pipeline
            self.versions[vid] = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": up["name"],
                                  "name": up["name"], "created_at": "2026-12-01T00:00:00Z"}
            self.specs[vid] = up["spec"]
            return 200, ("V2beta1Pipeline", self.pipelines[pid])
        if method == "POST" and path == f"{API}/pipelines/upload_version":
            up = self._upload(handler, query)
            pid = (query.get("pipelineid") or [None])[0]
            if pid not in self.pipelines:
                return 404, {"error": "no pipeline", "code": 5, "message": f"pipeline {pid} not found"}
            if any(v["pipeline_id"] == pid and v["display_name"] == up["name"] for v in self.versions.values()):
                return 409, {"error": "exists", "code": 6, "message": f"version {up['name']} already exists"}
            vid = str(uuid.uuid4())
            self.versions[vid] = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": up["name"],
                                  "name": up["name"], "description": up["description"], "created_at": "2026-12-01T00:00:00Z"}
            self.specs[vid] = up["spec"]
            return 200, ("V2beta1PipelineVersion", self.versions[vid])
        if method == "GET" and path == f"{API}/pipelines":
            name = self._filter_name(query)
            found = [p for p in self.pipelines.values() if name is None or p["display_name"] == name]
            return 200, ("V2beta1ListPipelinesResponse", {"pipelines": found, "total_size": len(found)} if found else {})
        match = re.fullmatch(rf"{API}/pipelines/([^/]+)/versions", path)
        if method == "GET" and match:
            name = self._filter_name(query)
            found = [v for v in self.versions.values() if v["pipeline_id"] == match[1] and (name is None or v["display_name"] == name)]
            return 200, ("V2beta1ListPipelineVersionsResponse", {"pipeline_versions": found, "total_size": len(found)} if found else {})
        if method == "GET" and path == f"{API}/experiments":
            name = self._filter_name(query)
            found = [e for e in self.experiments.values() if name is None or e["display_name"] == name]
            return 200, ("V2beta1ListExperimentsResponse", {"experiments": found, "total_size": len(found)} if found else {})
        if method == "POST" and path == f"{API}/experiments":
            body = self._json(handler, "V2beta1Experiment")
            if not body.get("display_name"):
                raise Invalid("experiment: no display_name")
            eid = str(uuid.uuid4())
            self.experiments[eid] = {**body, "experiment_id": eid, "storage_state": "AVAILABLE", "created_at": "2026-12-01T00:00:00Z"}
            return 200, ("V2beta1Experiment", self.experiments[eid])
        if method == "POST" and path == f"{API}/runs":
            body = self._json(handler, "V2beta1Run")
            self._check_run(body)
            rid = str(uuid.uuid4())
            self.runs[rid] = {**body, "run_id": rid, "state": "PENDING", "storage_state": "AVAILABLE", "created_at": "2026-12-01T00:00:00Z"}
            return 200, ("V2beta1Run", self.runs[rid])
        return 404, {"error": "not found", "code": 5, "message": f"{method} {path} is not served by the stand-in"}

    @staticmethod
    def _json(handler, model: str) -> dict:
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])) or b"{}")
        check(model, body)
        return body

    def _check_run(self, run: dict) -> None:
        for field in ("display_name", "experiment_id", "pipeline_version_reference", "runtime_config"):
            if not run.get(field):
                raise Invalid(f"run: {field} is required")
        if run["experiment_id"] not in self.experiments:
            raise Invalid(f"run: no experiment {run['experiment_id']}")
        ref = run["pipeline_version_reference"]
        version = self.versions.get(ref.get("pipeline_version_id"))
        if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
            raise Invalid(f"run: no pipeline version {ref}")
        inputs = self.specs[version["pipeline_version_id"]]["root"].get("inputDefinitions", {}).get("parameters", {})
        given = run["runtime_config"].get("parameters") or {}
        unknown = sorted(set(given) - set(inputs))
        missing = sorted(k for k, d in inputs.items() if k not in given and "defaultValue" not in d and not d.get("isOptional"))
        if unknown or missing:
            raise Invalid(f"run: parameters not the pipeline's inputs (unknown {unknown}, missing {missing})")


@pytest.fixture
def kfp_api():
    state = StandIn()
    api_client = kfp_server_api.ApiClient()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method):
            try:
                status, payload = state.handle(self, method)
            except (Invalid, ValueError, KeyError, AssertionError) as exc:
                state.refused.append(f"{method} {self.path}: {exc}")
                status, payload = 400, {"error": str(exc), "code": 3, "message": str(exc)}
            except Exception as exc:  # noqa: BLE001 - the stand-in's own bug: fail the test, not the socket
                state.refused.append(f"{method} {self.path}: stand-in error {type(exc).__name__}: {exc}")
                status, payload = 500, {"error": str(exc), "code": 13, "message": str(exc)}
            if isinstance(payload, tuple):  # a model: validate what we send as well
                model, data = payload
                check(model, data)
                api_client.deserialize(type("R", (), {"data": json.dumps(data)})(), model)
                payload = data
            out = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_stand_in_refuses_what_the_api_would():
    with pytest.raises(Invalid, match="unknown field"):
        check("V2beta1Run", {"display_name": "r", "pipeline_name": "x"})
    with pytest.raises(Invalid, match="is not a str"):
        check("V2beta1Experiment", {"display_name": 3})
    with pytest.raises(Invalid, match="not one of V2beta1RuntimeState"):
        check("V2beta1Run", {"state": "DONE"})


def test_publish_uploads_a_version_once_and_runs_it_in_a_named_experiment(kfp_api, tmp_path, monkeypatch):
    from pipelines import kfp_submit
    from pipelines.runner import compile_pipeline, run_parameters
    from t2v.config import load_config
    from tests.conftest import free_port

    state, host = kfp_api
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client keeps its context file under ~/.config/kfp
    cfg = load_config("tiny")
    stamped = compile_pipeline(cfg, tmp_path / "pipeline.yaml")
    client = kfp_submit.client(host, ui_host="https://kfp.example.com/pipeline")
    first = kfp_submit.publish(client, host, tmp_path / "pipeline.yaml", "t2v-test", stamped["pipeline_version"])
    again = kfp_submit.publish(client, host, tmp_path / "pipeline.yaml", "t2v-test", stamped["pipeline_version"])
    assert state.refused == []
    assert not first.reused_version and again.reused_version and again.version_id == first.version_id
    assert len(state.pipelines) == 1 and state.calls.count(f"POST {API}/pipelines/upload_version") == 1
    version = state.versions[first.version_id]
    assert version["display_name"] == stamped["pipeline_version"] and version["pipeline_id"] == first.pipeline_id
    assert first.url == f"https://kfp.example.com/pipeline/#/pipelines/details/{first.pipeline_id}/version/{first.version_id}"

    params = run_parameters(cfg, "s3://b/runs/r1", "https://mlflow.example.com", "parent-1", "r1", stamped["pipeline_version"], "abc")
    run = kfp_submit.start_run(client, host, first, "t2v-finetunes", "r1", params, service_account="t2v-pipeline-runner")
    second = kfp_submit.start_run(client, host, first, "t2v-finetunes", "r2", {**params, "run_name": "r2"})
    assert state.refused == []
    assert len(state.experiments) == 1 and run.experiment_id == second.experiment_id
    body = state.runs[run.run_id]
    assert body["display_name"] == "r1" and body["service_account"] == "t2v-pipeline-runner"
    assert state.experiments[body["experiment_id"]]["display_name"] == "t2v-finetunes"
    assert body["pipeline_version_reference"] == {"pipeline_id": first.pipeline_id, "pipeline_version_id": first.version_id}
    assert body["runtime_config"]["parameters"]["parent_run_id"] == "parent-1"
    assert run.url == f"https://kfp.example.com/pipeline/#/runs/details/{run.run_id}"

    # parameters the pipeline does not declare are refused by the stand-in, as by the API server
    with pytest.raises(kfp_submit.SubmitError) as refused:
        kfp_submit.start_run(client, host, first, "t2v-finetunes", "r3", {**params, "no_such_input": 1})
    assert str(refused.value) == (
        f"KFP {host}: creating run 'r3' failed: HTTP 400 Bad Request: "
        "run: parameters not the pipeline's inputs (unknown ['no_such_input'], missing [])"
    )
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(kfp_submit.SubmitError, match=f"KFP {re.escape(nowhere)}: connecting failed: "):
        kfp_submit.client(nowhere)


def test_t2v_submit_prints_the_run_url(kfp_api, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from t2v_cli.main import main

    state, host = kfp_api
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["submit", "--host", host, "--tracking-uri", tracking, "--package", str(tmp_path / "pipeline.yaml"),
            "--set", f"storage.root={tmp_path.as_uri()}/data", "--set", f"tracking.default_artifact_root={tmp_path}/artifacts",
            "--experiment", "t2v-finetunes", "--run-name", "first"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, (result.output, state.refused)
    assert state.refused == []
    (run,) = state.runs.values()
    (pipeline,) = state.pipelines.values()
    params = run["runtime_config"]["parameters"]
    assert run["display_name"] == "first" and params["run_name"] == "first" and params["tracking_uri"] == tracking
    lines = result.stdout.strip().splitlines()
    assert lines[-3].startswith(f"pipeline {pipeline['display_name']} version {params['pipeline_version']} (uploaded): {host}/#/pipelines/details/")
    assert lines[-2] == f"run first in experiment t2v-finetunes (MLflow parent run {params['parent_run_id']}):"
    assert lines[-1].strip() == f"{host}/#/runs/details/{run['run_id']}"
