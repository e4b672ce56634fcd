"""The three packages of the distribution: one version, and each marked as typed (PEP 561)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources

import pytest

PACKAGES = ["isthmus", "isthmus_airflow", "flytekitplugins.isthmus"]


@pytest.mark.parametrize("package", PACKAGES)
def test_version_is_the_distributions(package: str) -> None:
    declared = importlib.metadata.version("isthmus")
    assert declared != "0+unknown"
    assert importlib.import_module(package).__version__ == declared


def test_airflow_provider_info_names_the_same_version() -> None:
    from isthmus_airflow.get_provider_info import get_provider_info

    assert get_provider_info()["versions"] == [importlib.metadata.version("isthmus")]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_is_marked_typed(package: str) -> None:
    assert importlib.resources.files(package).joinpath("py.typed").is_file()
