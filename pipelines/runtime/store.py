"""The MLflow store: where runs go, the client every call goes through, the start-of-command check,
and the stages' experiments.

Defaults: ``MLFLOW_TRACKING_URI`` wins when set; otherwise a SQLite store at ``./mlruns/mlflow.db``
with artifacts under ``./mlruns/artifacts/<experiment>`` (absolute locations). Experiments are created
from ``mlruns_template/experiments.yaml``.

Every MLflow client is made by :func:`mlflow_client` (short HTTP timeouts, no long retries). A command
that tracks calls :func:`check_tracking` before any work: an unreachable server refuses the command
in seconds, with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import yaml

from experts.errors import TrackingError

__all__ = ["tracking_uri", "experiment_spec", "local_store_dir", "ensure_experiment", "find_or_create_parent", "mlflow_client", "check_tracking", "probe_server", "is_server", "registry_name", "HTTP_TIMEOUT_S", "PROBE_TIMEOUT_S"]

_TEMPLATE = Path(__file__).resolve().parents[2] / "mlruns_template" / "experiments.yaml"
_FALLBACK = {s: {"name": f"expertseg-{s}", "description": "", "tags": {"project": "expertseg", "stage": s}} for s in ("pretrain", "adapt", "evaluate", "compare", "tune", "bench")}


#: seconds one MLflow HTTP request may wait (connect, then each read), MLflow's retries off: our own
#: retries (``Tracker.retries``) decide. Set by :func:`mlflow_client` unless the environment sets them.
HTTP_TIMEOUT_S = 10
#: seconds the start-of-command probe waits for the server to answer, once.
PROBE_TIMEOUT_S = 10  # a busy server on a loaded 2-core machine can take several seconds to answer its first request

_REACHED: set[str] = set()  # tracking URIs that answered a probe in this process


def quiet_store_logs() -> None:
    """MLflow announces every SQLite migration at INFO level; keep warnings only."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def local_store_dir() -> Path:
    """``./mlruns`` in the working directory."""
    return Path.cwd() / "mlruns"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{local_store_dir() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server (``http://``, ``https://``)."""
    return uri.startswith(("http://", "https://"))


def _brief(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _unreachable(err: BaseException, timeout: float | None = None) -> str:
    """Why a server did not answer, in a few words."""
    text = str(err)
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    if "timed out" in text.lower() or "timeout" in type(err).__name__.lower():
        return f"no answer within {timeout:g} s" if timeout else "no answer in time"
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "unknown host"
    return _brief(err)


def mlflow_client(uri: str | None = None, *, create: bool = False):
    """The MLflow client every call of expertseg goes through (runs, parents, registry, downloads).

    HTTP requests wait at most :data:`HTTP_TIMEOUT_S` and MLflow does not retry them on its own
    (``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, unless already set), so a
    dead server costs seconds, not minutes. A SQLite store is created (its folder first) only with
    ``create``; a lookup in a store that does not exist raises :class:`TrackingError` and creates
    nothing.
    """
    uri = uri or tracking_uri()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if create:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif not db.is_file():
            raise TrackingError(f"no MLflow store at {db} (MLFLOW_TRACKING_URI is {'unset' if not os.environ.get('MLFLOW_TRACKING_URI') else uri}); set MLFLOW_TRACKING_URI to the store or server that holds the model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
        from mlflow import MlflowClient
    quiet_store_logs()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _env(**values: str):
    """Environment variables set for the duration of a ``with`` block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def probe_server(uri: str | None = None, *, fix: str) -> str:
    """Check that the tracking server at ``uri`` answers, in at most :data:`PROBE_TIMEOUT_S` seconds.

    One request (``search_experiments``, authenticated like every other call), no retries; a URI
    that answered once in this process is not asked again. Not a server: nothing to do. Raises
    :class:`TrackingError` naming the URI and ``fix``; returns the URI.
    """
    uri = uri or tracking_uri()
    if not is_server(uri) or uri in _REACHED:
        return uri
    try:
        with _env(MLFLOW_HTTP_REQUEST_TIMEOUT=str(PROBE_TIMEOUT_S), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
            mlflow_client(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - whatever the cause, the server is not usable
        raise TrackingError(f"the MLflow tracking server {uri} does not answer ({_unreachable(err, PROBE_TIMEOUT_S)}); {fix}") from None
    _REACHED.add(uri)
    return uri


def check_tracking(cfg) -> None:
    """Before any work, refuse a command whose tracking store cannot be used, in seconds.

    ``cfg.tracking.backend == "local"``: nothing to check. A server (``http(s)://``) is probed
    (:func:`probe_server`). A SQLite store is checked without being created or migrated: an existing file
    must be an MLflow store we can write, a new one must have a writable folder. After this, a
    tracker failure is an outage: it is recorded locally and the run goes on.
    """
    if cfg.tracking.backend != "mlflow":
        return
    uri = tracking_uri()
    if is_server(uri):
        probe_server(uri, fix="start the server (scripts/mlflow-server.sh) or fix MLFLOW_TRACKING_URI, or pass --tracking local")
        return
    if uri.startswith("sqlite:///"):
        problem = _sqlite_problem(Path(uri[len("sqlite:///") :]))
        if problem:
            raise TrackingError(f"cannot use the MLflow tracking store {uri}: {problem}; fix MLFLOW_TRACKING_URI, or pass --tracking local")
    _REACHED.add(uri)


def _sqlite_problem(db: Path) -> str | None:
    """Why the SQLite store ``db`` cannot be used (read-only checks), or ``None``."""
    import sqlite3

    if db.exists():
        if not os.access(db, os.R_OK | os.W_OK):
            return "the file is not readable and writable"
        if db.stat().st_size == 0:
            return None  # an empty file: MLflow sets it up
        try:
            with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S) as conn:
                conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error as err:
            return f"not an MLflow store ({err})"
        return None
    folder = db.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        return f"cannot create it: {folder} is not a writable folder"
    return None


def experiment_spec(stage: str) -> dict:
    """Name, description and default tags of a stage's experiment, from the template."""
    specs = _FALLBACK
    if _TEMPLATE.is_file():
        specs = (yaml.safe_load(_TEMPLATE.read_text()) or {}).get("experiments", _FALLBACK)
    return specs.get(stage, _FALLBACK.get(stage, {"name": f"expertseg-{stage}", "tags": {}}))


def ensure_experiment(client, *, stage: str, experiment: str = "") -> str:
    """The id of the stage's experiment, created from the template when missing.

    With a SQLite store, artifacts go beside the database, ``<db folder>/artifacts/<experiment>``
    (absolute), so the store and its artifacts move together.
    """
    spec = experiment_spec(stage)
    name = experiment or spec["name"]
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:///"):
        location = (Path(client.tracking_uri[len("sqlite:///") :]).parent / "artifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={**spec.get("tags", {}), "mlflow.note.content": spec.get("description", "")})
    except Exception:  # noqa: BLE001 - another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_or_create_parent(*, stage: str, run_name: str, tags: dict, key: str, experiment: str = "") -> str:
    """The id of the parent run tagged ``key=tags[key]`` and ``role=parent`` in the stage's experiment,
    created when missing (e.g. one parent run per new doctor). Raises :class:`TrackingError` (one
    line) if MLflow cannot be used."""
    uri = tracking_uri()
    try:
        client = mlflow_client(uri, create=True)
        spec = experiment_spec(stage)
        exp_id = ensure_experiment(client, stage=stage, experiment=experiment)
        value = str(tags[key]).replace("'", "")
        found = client.search_runs([exp_id], filter_string=f"tags.{key} = '{value}' and tags.role = 'parent'", max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp_id, run_name=run_name, tags={**spec.get("tags", {}), **{k: str(v) for k, v in tags.items()}, "role": "parent"})
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id
    except TrackingError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to reach the store
        raise TrackingError(f"cannot find or create the parent run {run_name!r} in MLflow at {uri} ({_brief(err)}); start the server or fix MLFLOW_TRACKING_URI, or pass --tracking local") from None


def registry_name(dataset_name: str) -> str:
    """A registry-safe model name: ``expertseg-<dataset>`` without ``/ : . % " '``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in (dataset_name or "dataset"))
    return f"expertseg-{safe}"
