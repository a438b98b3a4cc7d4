"""Shared fixtures: a toy dataset and a migrated MLflow store copied per test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toydata import make_toy_dataset  # noqa: E402


@pytest.fixture(scope="session")
def toy_dataset_master(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "ToySpheres")


@pytest.fixture
def toy_dataset(toy_dataset_master, tmp_path) -> Path:
    """A fresh copy of the toy dataset (tests may modify it)."""
    dst = tmp_path / "ToySpheres"
    shutil.copytree(toy_dataset_master, dst)
    return dst


@pytest.fixture(scope="session")
def mlflow_store_master(tmp_path_factory) -> Path:
    """A SQLite MLflow store migrated once per session (migration costs seconds)."""
    import mlflow
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_master")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    mlflow.set_tracking_uri(None)
    return folder / "mlflow.db"


@pytest.fixture
def mlflow_uri(mlflow_store_master, tmp_path, monkeypatch) -> str:
    """``MLFLOW_TRACKING_URI`` pointing at a private copy of the migrated store."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_store_master, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
