"""charts/: render both charts offline with helm-python-sdk (Helm's Go SDK as a library, no binary) with the
default values and a production-like values file, lint them, validate every rendered manifest against the
pinned Kubernetes version's schemas with kubernetes-validate, and check values.schema.json rejects bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
CHARTS = {"mlflow": ROOT / "charts" / "mlflow", "pipeline-rbac": ROOT / "charts" / "pipeline-rbac"}
NAMESPACE = {"mlflow": "mlflow", "pipeline-rbac": "kubeflow"}
PROFILES = ["default", "production"]


def values_for(chart: str, profile: str) -> dict | None:
    if profile == "default":
        return None
    return yaml.safe_load((CHARTS[chart] / "ci" / "production-values.yaml").read_text())


def render(chart: str, values: dict | None = None) -> list[dict]:
    loaded = helm.Chart.load(str(CHARTS[chart]))
    rendered = loaded.render(values, name=chart, namespace=NAMESPACE[chart], is_install=True)
    objs = []
    for text in rendered.values():
        objs.extend(d for d in yaml.safe_load_all(text) if d)
    return objs


def index(objs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], list[dict]]:
    return {(c, p): render(c, values_for(c, p)) for c in CHARTS for p in PROFILES}


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize("profile", PROFILES)
def test_lint_clean(chart, profile, k8s_version):
    report = helm.lint(
        str(CHARTS[chart]),
        values_for(chart, profile),
        strict=True,
        namespace=NAMESPACE[chart],
        kube_version=f"v{k8s_version}",
    )
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    assert not problems, problems


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_manifest_validates(rendered, chart, profile, k8s_version):
    objs = rendered[(chart, profile)]
    assert objs
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{chart}/{profile} {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


def container(objs, kind, name, cname):
    obj = index(objs)[(kind, name)]
    return next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == cname), obj


def test_mlflow_default_runs_server_with_postgres_and_s3(rendered):
    objs = rendered[("mlflow", "default")]
    kinds = {k for k, _ in index(objs)}
    assert {"Deployment", "Service", "ServiceAccount", "StatefulSet", "Secret"} <= kinds
    assert "Ingress" not in kinds
    c, dep = container(objs, "Deployment", "mlflow", "mlflow")
    args = c["args"]
    assert args[0] == "server" and "--serve-artifacts" in args
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://")
    assert args[args.index("--backend-store-uri") + 1] == "$(MLFLOW_BACKEND_STORE_URI)"
    env = {e["name"]: e for e in c["env"]}
    ref = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    secret = index(objs)[("Secret", ref["name"])]
    assert secret["stringData"][ref["key"]].startswith("postgresql+psycopg2://mlflow:")
    assert "@mlflow-postgresql:5432/mlflow" in secret["stringData"][ref["key"]]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert c["resources"]["limits"] and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    sts = index(objs)[("StatefulSet", "mlflow-postgresql")]
    pg = sts["spec"]["template"]["spec"]["containers"][0]
    assert pg["image"].startswith("docker.io/library/postgres:")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"


def test_mlflow_production_uses_external_dsn_and_ingress(rendered):
    objs = rendered[("mlflow", "production")]
    kinds = {k for k, _ in index(objs)}
    assert "StatefulSet" not in kinds and "Secret" not in kinds  # nothing secret rendered by the chart
    c, dep = container(objs, "Deployment", "mlflow", "mlflow")
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-backend-store",
        "key": "dsn",
    }
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://seaweedfs-s3.seaweedfs:8333"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-s3-credentials"
    assert dep["spec"]["replicas"] == 2 and "--allowed-hosts" in c["args"]
    ing = index(objs)[("Ingress", "mlflow")]
    assert ing["spec"]["rules"][0]["host"] == "mlflow.t2v.example.com" and ing["spec"]["tls"]


def test_mlflow_runs_its_basic_auth_app(rendered):
    """Authentication on: the auth app, its config (the chart's file plus the chart's database), the admin
    password and Flask key from a Secret, and the Job that creates the identities with the chart's script."""
    objs = rendered[("mlflow", "default")]
    c, dep = container(objs, "Deployment", "mlflow", "mlflow")
    args = c["args"]
    assert args[args.index("--app-name") + 1] == "basic-auth"
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow-auth/basic_auth.ini"
    for name, key in (("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"), ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key")):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "mlflow-auth", "key": key}
        assert index(objs)[("Secret", "mlflow-auth")]["data"][key]
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth-config")
    ini = index(objs)[("Secret", volume["secret"]["secretName"])]["stringData"]["basic_auth.ini"]
    shipped = (CHARTS["mlflow"] / "files" / "basic_auth.ini").read_text()
    assert ini.startswith(shipped.strip().splitlines()[0]) and "default_permission = READ" in ini
    assert "admin_password" not in ini and "\ndatabase_uri = postgresql+psycopg2://mlflow:" in ini
    job = index(objs)[("Job", "mlflow-auth-bootstrap")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    script = index(objs)[("ConfigMap", "mlflow-auth-bootstrap")]["data"]["bootstrap_access.py"]
    assert script.strip() == (CHARTS["mlflow"] / "files" / "bootstrap_access.py").read_text().strip()
    boot = job["spec"]["template"]["spec"]["containers"][0]
    benv = {e["name"]: e for e in boot["env"]}
    assert benv["T2V_CI_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-ci-credentials", "key": "password"}
    assert benv["T2V_PIPELINE_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-pipeline-credentials"
    assert benv["T2V_REGISTERED_MODELS"]["value"] == "step-video-t2v-dit,step-video-t2v-vae"
    assert benv["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:80"
    assert not any("value" in e and "password" in e["name"].lower() for e in boot["env"] + c["env"])


def test_mlflow_production_auth_reads_every_secret_it_is_given(rendered):
    objs = rendered[("mlflow", "production")]
    c, dep = container(objs, "Deployment", "mlflow", "mlflow")
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth"
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth-config")
    assert volume["secret"]["secretName"] == "mlflow-auth-config"
    job = index(objs)[("Job", "mlflow-auth-bootstrap")]
    mounts = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert mounts["reviewers"]["secret"]["secretName"] == "mlflow-reviewers"
    with pytest.raises(helm.HelmError, match="auth.configSecret"):
        render("mlflow", {**values_for("mlflow", "production"), "auth": {"enabled": True, "ciSecret": "ci"}})
    off = render("mlflow", {"auth": {"enabled": False}})
    c, _ = container(off, "Deployment", "mlflow", "mlflow")
    assert "--app-name" not in c["args"] and not any(k == "Job" for k, _ in index(off))


def test_mlflow_external_db_without_secret_fails_clearly():
    with pytest.raises(helm.HelmError, match="backendStore.existingSecret"):
        render("mlflow", {"postgresql": {"enabled": False}})


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": "two"},
        {"artifacts": {"destination": "file:///tmp/artifacts"}},
        {"server": {"port": 80}},
        {"postgresql": {"enabled": True, "image": {"repository": "docker.io/bitnami/postgresql"}}},
        {"typoKey": 1},
        {"auth": {"enabled": "yes"}},
        {"auth": {"enabled": True, "registeredModels": []}},
        {"auth": {"enabled": True, "ciSecret": "CI_Secret"}},
    ],
)
def test_mlflow_schema_rejects_bad_values(bad):
    chart = helm.Chart.load(str(CHARTS["mlflow"]))
    with pytest.raises(helm.HelmError):
        chart.validate_schema(bad)


def test_pipeline_rbac_grants_the_launcher_what_it_needs(rendered):
    for profile in PROFILES:
        objs = index(rendered[("pipeline-rbac", profile)])
        role = objs[("Role", "t2v-training-launcher")]
        rules = {
            (g, r): set(rule["verbs"])
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
        }
        need = {"create", "get", "watch", "delete"}
        assert need <= rules[("trainer.kubeflow.org", "trainjobs")]
        assert need <= rules[("kubeflow.org", "pytorchjobs")]
        assert "get" in rules[("", "pods/log")]
        assert not any("*" in verbs for verbs in rules.values())
        binding = objs[("RoleBinding", "t2v-training-launcher")]
        subjects = {(s["kind"], s["name"]) for s in binding["subjects"]}
        assert ("ServiceAccount", "t2v-pipeline-runner") in subjects
        assert ("ServiceAccount", "pipeline-runner") in subjects
        assert ("ServiceAccount", "t2v-ci-promoter") not in subjects  # CI may not launch jobs
        ci_role = objs[("Role", "t2v-ci-promoter")]
        assert ci_role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["mlflow-ci-credentials"],
                "verbs": ["get"],
            }
        ]
        assert (
            objs[("ServiceAccount", "t2v-ci-promoter")]["metadata"]["labels"]["t2v.dev/identity"]
            == "ci-promoter"
        )
    assert ("Secret", "t2v-ci-promoter-token") in index(rendered[("pipeline-rbac", "production")])


def test_pipeline_rbac_schema_rejects_bad_values():
    chart = helm.Chart.load(str(CHARTS["pipeline-rbac"]))
    for bad in [
        {"ci": {"name": "CI_Promoter"}},
        {"pipelineRunner": {"name": "x", "extraSubjects": [{"kind": "Robot", "name": "r"}]}},
        {"launcher": {"trainJobs": "yes"}},
    ]:
        with pytest.raises(helm.HelmError):
            chart.validate_schema(bad)
