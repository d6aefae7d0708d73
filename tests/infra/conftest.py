"""Shared settings of the infra tests."""

from __future__ import annotations

import pytest

# The Kubernetes version every rendered manifest is validated against (kubernetes-validate ships its schemas):
# the EKS version infra/terraform pins. Keep tests/unit/test_launcher.py's K8S_VERSION equal to it.
K8S_VERSION = "1.33.0"


@pytest.fixture(scope="session")
def k8s_version() -> str:
    return K8S_VERSION
