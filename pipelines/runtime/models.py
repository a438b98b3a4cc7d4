"""Resolve what ``--model`` names into a loaded :class:`~experts.bundle.ModelBundle`.

Accepted: a run folder (holding ``model/``), a model folder (``model.json``), an adapter folder
(``adapter.json``: its pretrained model is loaded first, then the adapter), or an MLflow URI
(``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run_id>/model``), downloaded to the
user's cache (:func:`cache_dir`) and loaded by our code, never by MLflow's unpickling loader. A lookup
never creates anything in the current folder, and a failed one creates nothing at all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from experts.errors import ModelFileError

__all__ = ["resolve_model_dir", "load_model", "pinned_ref", "cache_dir"]

MLFLOW_REFS = ("models:/", "runs:/", "mlflow-artifacts:")


def cache_dir() -> Path:
    """expertseg's cache: ``$EXPERTSEG_CACHE``, else ``$XDG_CACHE_HOME/expertseg``, else
    ``~/.cache/expertseg``. Downloaded models go to ``<cache>/models/<key>``."""
    if os.environ.get("EXPERTSEG_CACHE", "").strip():
        return Path(os.environ["EXPERTSEG_CACHE"].strip()).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "expertseg"


def resolve_model_dir(ref: str) -> Path:
    """A local folder for ``ref`` (downloading MLflow artifacts when needed)."""
    if ref.startswith(MLFLOW_REFS):
        return _download(ref)
    path = Path(ref)
    if not path.exists():
        raise ModelFileError(f"{ref}: no such model folder or MLflow URI; pass a run folder, its model/ folder, an adapter folder or models:/<name>@<alias>")
    for candidate in (path, path / "model", path / "adapter"):
        if (candidate / "model.json").is_file() or (candidate / "adapter.json").is_file():
            return candidate
    raise ModelFileError(f"{ref}: holds no model.json or adapter.json; pass a folder written by expertseg")


def _download(ref: str) -> Path:
    """Fetch ``ref`` from MLflow into the cache: into a temporary folder first, moved into the
    cache only once complete, so a failure leaves no folder behind."""
    import mlflow

    from experts.errors import TrackingError
    from pipelines.runtime.store import mlflow_client, probe_server, tracking_uri

    uri = tracking_uri()
    probe_server(uri, fix=f"start the server or point MLFLOW_TRACKING_URI at a running one, or pass a run folder instead of {ref}")
    try:
        mlflow_client(uri)  # the one client set-up (timeouts); refuses a SQLite store that does not exist
    except TrackingError as err:
        raise ModelFileError(f"{ref}: {err.problems[0]}") from None
    staging = Path(tempfile.mkdtemp(prefix="expertseg-download-"))
    try:
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(staging), tracking_uri=uri))
    except Exception as err:  # noqa: BLE001
        shutil.rmtree(staging, ignore_errors=True)
        text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise ModelFileError(f"{ref}: cannot fetch from MLflow at {uri} ({type(err).__name__}: {text}); check the name/alias or MLFLOW_TRACKING_URI") from None
    try:
        rel = got.resolve().relative_to(staging.resolve())
    except ValueError:  # already a local folder: MLflow gave its path
        shutil.rmtree(staging, ignore_errors=True)
        return got
    final = cache_dir() / "models" / hashlib.sha256(f"{uri}|{ref}".encode()).hexdigest()[:16]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (final.parent / f".{final.name}.{kind}-{uuid.uuid4().hex[:8]}" for kind in ("new", "old"))
    shutil.move(str(staging), str(tmp))
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:  # another process put the same download there first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return final / rel


def load_model(ref: str, *, device="cpu", adapters: list[str] | None = None, _lineage: tuple = ()):
    """Load a bundle (pretrained or adapted) and stack any extra ``adapters`` onto it.

    An adapter names the model it was trained on (``base``); a chain of bases that comes back to
    itself, or longer than a few links, is refused."""
    from experts.adaptation import apply_adapter, is_adapter, read_adapter_meta
    from experts.bundle import load_bundle

    folder = resolve_model_dir(ref)
    key = str(folder.resolve())
    if key in _lineage or len(_lineage) > 8:
        raise ModelFileError(f"{ref}: its adapters' base models form a loop ({' -> '.join(_lineage + (key,))[:300]}); point adapter.json 'base' at the pretrained model")
    if is_adapter(folder):
        meta = read_adapter_meta(folder)
        base = meta["base"]
        if "://" not in base and ":/" not in base and not Path(base).is_absolute():
            base = str(folder / base)  # a relative base lives beside the adapter
        bundle = load_model(base, device=device, _lineage=_lineage + (key,))
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
        from pipelines.runtime.store import mlflow_client

        name, alias = model[len("models:/") :].split("@", 1)
        try:
            version = mlflow_client().get_model_version_by_alias(name, alias).version
            return f"models:/{name}/{version}"
        except Exception:  # noqa: BLE001 - unpinned is still a valid reference
            return model
    if model.startswith(("models:/", "runs:/")):
        return model
    return str(resolve_model_dir(model).resolve())
