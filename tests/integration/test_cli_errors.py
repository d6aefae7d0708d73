"""Bad input gets a clear one-line error, never a traceback from deep inside a library."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from components.runtime import invoke
from t2v.config import load_config


def t2v(*args, cwd):
    return subprocess.run([sys.executable, "-m", "t2v_cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_bad_config_value_is_rejected_before_any_work(tmp_path):
    result = t2v("run", "--local", "--set", "t2i.lr=-1", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "t2i.lr: Input should be greater than 0 (got -1)" in result.stderr
    assert not (tmp_path / ".runs").exists()  # nothing started: no MLflow store, no data


def test_unreadable_input_uri(tmp_path):
    missing = (tmp_path / "nowhere" / "manifest.json").as_uri()
    result = t2v("stage", "train-vae", "--input", f"clips={missing}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {missing}: no such file"


def test_missing_raw_prefix_fails_the_pipeline_naming_the_stage(tmp_path):
    raw = (tmp_path / "no-videos").as_uri()
    result = t2v(
        "run", "--local", "--set", "source.kind=uri", "--set", f"source.raw_uri={raw}", "--run-name", "broken",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr.split("Error: pipeline failed")[-1]
    assert "Inner task failed: 'prepare-data'" in result.stderr
    assert f"prepare-data: StageError: {raw}: no table (metadata.jsonl, as curate.filters.input_table names it) and no video files under the raw video prefix" in result.stderr


def test_component_user_error_is_one_line_exit_2(tmp_path, capsys):
    cfg = load_config("tiny")
    arguments = dict(
        config_json=cfg.to_json(),
        run_root=tmp_path.as_uri(),
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        parent_run_id="unused",
        pipeline_version="dev",
        git_sha="x",
        run_name="r",
        clips=types.SimpleNamespace(path=str(tmp_path / "absent.json"), metadata={}),
        vae=types.SimpleNamespace(path=str(tmp_path / "out.json"), metadata={}),
    )
    with pytest.raises(SystemExit) as info:
        invoke("train-vae", arguments, outputs=("vae",))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR [train-vae] ") and "absent.json: no such file" in err and "\n" not in err
