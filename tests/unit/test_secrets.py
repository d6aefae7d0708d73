"""t2v.secrets: what counts as a credential, and moving a URI's credentials into the environment."""

from __future__ import annotations

import logging

import pytest

from t2v.secrets import RedactingFilter, adopt_uri_credentials, redact, redact_obj, split_credentials


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("https://ci:pa55word@mlflow.example.com/api", "https://ci:***@mlflow.example.com/api"),
        ("postgresql+psycopg2://mlflow:Xy9@db:5432/mlflow", "postgresql+psycopg2://mlflow:***@db:5432/mlflow"),
        ("https://ghp_0123456789abcdefghij@github.com/o/r", "https://***@github.com/o/r"),
        ("s3://b/k?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&part=2", "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&part=2"),
        ("key AKIAABCDEFGHIJKLMNOP in a message", "key *** in a message"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x", "Authorization: Bearer ***"),
        ("http://127.0.0.1:5000 and s3://bucket/path", "http://127.0.0.1:5000 and s3://bucket/path"),
    ],
)
def test_redact(text, clean):
    assert redact(text) == clean


def test_the_values_of_credential_variables_are_masked_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    assert redact("failed with key wJalrXUtnFEMI/K7MDENG") == "failed with key ***"
    assert redact_obj({"a": ["x wJalrXUtnFEMI/K7MDENG"], "n": 3}) == {"a": ["x ***"], "n": 3}


def test_a_uris_credentials_move_into_the_environment(monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    assert split_credentials("http://[::1]:5000/x") == ("http://[::1]:5000/x", None, None)
    assert adopt_uri_credentials("https://ci:s3cret@mlflow.example.com:8443/p") == "https://mlflow.example.com:8443/p"
    import os

    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("ci", "s3cret")
    # an identity the environment already gives wins over the URI's
    assert adopt_uri_credentials("https://other:pw2@mlflow.example.com") == "https://mlflow.example.com"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ci"


def test_log_records_are_redacted_arguments_included():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "tracking at %s", ("https://u:pw@h",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "tracking at https://u:***@h"
