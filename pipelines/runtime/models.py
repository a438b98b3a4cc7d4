"""Resolve what ``--model`` names into a loaded :class:`~experts.bundle.ModelBundle`.

Accepted: a run folder (holding ``model/``), a model folder (``model.json``), an adapter folder
(``adapter.json``: its pretrained model is loaded first, then the adapter), or an MLflow URI
(``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run_id>/model``), downloaded to a
local cache and loaded by our code, never by MLflow's unpickling loader.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from experts.errors import ModelFileError

__all__ = ["resolve_model_dir", "load_model", "pinned_ref"]


def _cache_dir() -> Path:
    return Path.cwd() / "mlruns" / "downloads"


def resolve_model_dir(ref: str) -> Path:
    """A local folder for ``ref`` (downloading MLflow artifacts when needed)."""
    if ref.startswith(("models:/", "runs:/", "mlflow-artifacts:")):
        import mlflow

        from pipelines.runtime.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        dst = _cache_dir() / hashlib.sha256(ref.encode()).hexdigest()[:16]
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dst)))
        except Exception as err:  # noqa: BLE001
            raise ModelFileError(f"{ref}: cannot fetch from MLflow at {tracking_uri()} ({type(err).__name__}: {str(err)[:160]}); check the name/alias or MLFLOW_TRACKING_URI") from None
    path = Path(ref)
    if not path.exists():
        raise ModelFileError(f"{ref}: no such model folder or MLflow URI; pass a run folder, its model/ folder, an adapter folder or models:/<name>@<alias>")
    for candidate in (path, path / "model", path / "adapter"):
        if (candidate / "model.json").is_file() or (candidate / "adapter.json").is_file():
            return candidate
    raise ModelFileError(f"{ref}: holds no model.json or adapter.json; pass a folder written by expertseg")


def load_model(ref: str, *, device="cpu", adapters: list[str] | None = None):
    """Load a bundle (pretrained or adapted) and stack any extra ``adapters`` onto it."""
    from experts.adaptation import apply_adapter, is_adapter, read_adapter_meta
    from experts.bundle import load_bundle

    folder = resolve_model_dir(ref)
    if is_adapter(folder):
        meta = read_adapter_meta(folder)
        base = meta["base"]
        if "://" not in base and ":/" not in base and not Path(base).is_absolute():
            base = str(folder / base)  # a relative base lives beside the adapter
        bundle = load_model(base, device=device)
        bundle = apply_adapter(bundle, folder)
    else:
        bundle = load_bundle(folder, device=device)
    for extra in adapters or []:
        bundle = apply_adapter(bundle, resolve_model_dir(extra))
    bundle.network.to(device)
    return bundle


def pinned_ref(model: str) -> str:
    """Where a model lives, pinned: a registry alias becomes its version, a folder its full path."""
    if model.startswith("models:/") and "@" in model:
        from mlflow import MlflowClient

        from pipelines.runtime.tracking import tracking_uri

        name, alias = model[len("models:/") :].split("@", 1)
        try:
            version = MlflowClient(tracking_uri=tracking_uri()).get_model_version_by_alias(name, alias).version
            return f"models:/{name}/{version}"
        except Exception:  # noqa: BLE001
            return model
    if model.startswith(("models:/", "runs:/")):
        return model
    return str(resolve_model_dir(model).resolve())
