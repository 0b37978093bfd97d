"""MLflow tracking: one experiment per space, one parent run per search, one child per trial.

Every MLflow call of the package lives here. A :class:`Tracker` holds only the store's URI
and the experiment name, so it pickles into Ray workers; each process opens its own client.

* The parent run holds the search settings as params and, at the end, the summary CSV, the
  importance table, the plot and the best trial's checkpoint as artifacts.
* A child run is tagged ``mlflow.parentRunId`` and ``tune_trial_id``; it holds the trial's
  flattened config as params, every epoch's metrics (step = epoch) and, as tag
  ``trial_state``, how it ended: ``completed``, ``stopped_early`` or ``errored``.
* :meth:`Tracker.child_run` finds a trial's run before it creates one, so a retried or
  resumed trial logs into the same run: one child per trial, whatever happens.

During a search, trials and the driver log through `tune.outbox`, never waiting on MLflow for
more than a few seconds. Credentials never leave memory: a ``http://user:password@host``
URI is split into the public :attr:`Tracker.uri` (what is printed and recorded) and the
user name and password, which reach MLflow through ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` in this process's environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow 3's UI opens an experiment of this kind on its runs table, not the GenAI overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_PORT = 5000
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "tune_trial_id"
STATE_TAG = "trial_state"
ROLE_TAG = "tune_role"
TRIAL_STATES = ("completed", "stopped_early", "errored")
_RUN_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "errored": "FAILED"}
_MAX_PARAMS_PER_BATCH = 100
AUTH_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# Query parameters that carry secrets in some tracking URIs (databricks, signed URLs).
_SECRET_QUERY = ("token", "access_token", "password", "secret", "key", "signature", "sig")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI and what to do."""


def resolve_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``; local paths made
    absolute, because Ray trials run in their own working directories. A sqlite URI without
    a file, or in a folder that does not exist, is refused (:class:`TrackingError`)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite://"):
        return _checked_sqlite(uri)
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri).resolve().as_uri()
    return uri


def _checked_sqlite(uri: str) -> str:
    if not uri.startswith("sqlite:///") or uri.rstrip("/") == "sqlite:":
        raise TrackingError(
            f"MLflow tracking URI {uri}: a sqlite store needs a file, e.g. sqlite:///mlflow.db "
            "(relative) or sqlite:////abs/path/mlflow.db"
        )
    db = Path(uri.removeprefix("sqlite:///").split("?")[0]).expanduser().resolve()
    if db.is_dir():
        raise TrackingError(f"MLflow tracking URI {uri}: {db} is a folder; name a .db file in it")
    if not db.parent.is_dir():
        raise TrackingError(
            f"MLflow tracking URI {uri}: folder {db.parent} does not exist; create it "
            f"(mkdir -p {db.parent}) or choose another path"
        )
    return f"sqlite:///{db}"


def redact(uri: str) -> str:
    """``uri`` without its password and secret query values: what may be printed or stored."""
    parsed = urlparse(uri)
    netloc = parsed.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else f"{user}@{host}"
    query = urlencode(
        [(k, "***" if k.lower() in _SECRET_QUERY else v) for k, v in parse_qsl(parsed.query)],
        safe="*",
    )
    return urlunparse(parsed._replace(netloc=netloc, query=query))


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """The URI without ``user:password@`` and MLflow's environment for them ({} if none)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or "@" not in parsed.netloc:
        return uri, {}
    userinfo, host = parsed.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    from urllib.parse import unquote

    auth = {AUTH_ENV[0]: unquote(user)}
    if password:
        auth[AUTH_ENV[1]] = unquote(password)
    return urlunparse(parsed._replace(netloc=host)), auth


def _quiet_mlflow() -> None:
    # The first use of a sqlite store prints database migrations; they are not news.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A locked store's traceback, at every attempt: `tune.outbox` says it once, in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


class Tracker:
    """MLflow client for one experiment; cheap to pickle, opens its client on first use.

    ``uri`` may hold ``user:password@``: :attr:`uri` is then the URI without them and
    :attr:`auth` the credentials, which are never pickled (Tune writes its callbacks to
    ``tuner.pkl``); :class:`tune.trial.TrialContext` carries them to the trials in memory."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        self.uri, self.auth = split_credentials(resolve_uri(uri))
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "experiment": self.experiment}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["experiment"])  # type: ignore[misc]

    def use_credentials_of(self, uri: str | None) -> None:
        """Take the credentials of ``uri`` (a resume given --mlflow-uri with them) when it
        names this store."""
        if uri:
            public, auth = split_credentials(resolve_uri(uri))
            if public == self.uri and auth:
                self.auth = auth

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            _quiet_mlflow()
            # MLflow reads them from the environment at every request; they stay in memory.
            os.environ.update(self.auth)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # -- checks

    def check_reachable(self, timeout_s: int = 5) -> None:
        """Fail fast, with a clear message, if the store cannot be reached or written."""
        with bounded_http(timeout_s):
            try:
                self.experiment_id()
            except Exception as err:  # MLflow raises many types for a dead store
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise TrackingError(
                    f"MLflow tracking store {self.uri} is not reachable ({first[:200]}); "
                    "start the server, or pass --mlflow-uri sqlite:///mlflow.db for a local store"
                ) from None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = _retry(self.client.get_experiment_by_name, self.experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"MLflow experiment '{self.experiment}' is deleted in {self.uri}; restore it "
                    "(mlflow experiments restore) or choose another --name"
                )
            if found is not None:
                self._experiment_id = found.experiment_id
                if found.tags.get(EXPERIMENT_KIND_TAG) is None:
                    _retry(
                        self.client.set_experiment_tag,
                        found.experiment_id,
                        EXPERIMENT_KIND_TAG,
                        EXPERIMENT_KIND,
                    )
            else:
                self._experiment_id = _retry(
                    self.client.create_experiment,
                    self.experiment,
                    artifact_location=self._artifact_location(),
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
        return self._experiment_id

    def browse_hint(self) -> list[str]:
        """How to look at this experiment: the command that serves a local store, if one is
        needed, and the address of the experiment's runs table."""
        runs = f"#/experiments/{self.experiment_id()}/runs"
        if urlparse(self.uri).scheme in ("http", "https"):
            return [f"MLflow runs: {self.uri.rstrip('/')}/{runs}"]
        return [
            f"MLflow UI: mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 "
            f"--port {UI_PORT}",
            f"  then open http://127.0.0.1:{UI_PORT}/{runs}",
        ]

    def _artifact_location(self) -> str | None:
        """Beside a sqlite store (``mlruns/`` next to the .db file) rather than in whatever
        directory the search happened to start from; a server decides for itself."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri.removeprefix("sqlite:///"))
        return (db.parent / "mlruns" / self.experiment).as_uri()

    # -- runs

    def start_parent(self, name: str, params: Mapping[str, Any], role: str = "search") -> str:
        """A parent run, tagged with its role: ``search`` (a search or a fixed list of
        trials) or ``seed_noise`` (a search's best configuration under other seeds)."""
        run = _retry(
            self.client.create_run,
            self.experiment_id(),
            run_name=name,
            tags={ROLE_TAG: role},
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def reopen(self, run_id: str, attempts: int = 6) -> None:
        """Mark a resumed search's parent, or a retried trial's run, as running again."""
        _retry(self.client.update_run, run_id, status="RUNNING", attempts=attempts)

    def child_run(
        self,
        parent_id: str,
        trial_id: str,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """The trial's child run: the one already there, else a new one with its params."""
        existing = self.find_child(parent_id, trial_id)
        if existing is not None:
            _retry(self.client.update_run, existing, status="RUNNING")
            return existing
        run_id = self.create_child(parent_id, trial_id, name, tags or {})
        self.log_params(run_id, params)
        return run_id

    def create_child(
        self,
        parent_id: str,
        trial_id: str,
        name: str,
        tags: Mapping[str, str],
        attempts: int = 6,
    ) -> str:
        """A new child run; :meth:`find_child` first, or a trial may get two."""
        run = _retry(
            self.client.create_run,
            self.experiment_id(),
            run_name=name,
            tags={PARENT_TAG: parent_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial", **tags},
            attempts=attempts,
        )
        return run.info.run_id

    def find_child(self, parent_id: str, trial_id: str, attempts: int = 6) -> str | None:
        runs = _retry(
            self.client.search_runs,
            [self.experiment_id()],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.{TRIAL_TAG} = '{trial_id}'",
            max_results=1,
            attempts=attempts,
        )
        return runs[0].info.run_id if runs else None

    def children(self, parent_id: str) -> list[Any]:
        return list(
            _retry(
                self.client.search_runs,
                [self.experiment_id()],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                max_results=10_000,
            )
        )

    # -- logging

    def log_params(self, run_id: str, params: Mapping[str, Any], attempts: int = 6) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            batch = items[start : start + _MAX_PARAMS_PER_BATCH]
            _retry(self.client.log_batch, run_id, params=batch, attempts=attempts)

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        step: int,
        timestamp: int | None = None,
        attempts: int = 6,
    ) -> None:
        """One step's metrics. Sent again with the same ``timestamp`` (milliseconds), they
        are not stored twice."""
        from mlflow.entities import Metric

        when = int(time.time() * 1000) if timestamp is None else int(timestamp)
        items = [
            Metric(k, float(v), when, int(step))
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        _retry(self.client.log_batch, run_id, metrics=items, attempts=attempts)

    def set_tags(self, run_id: str, tags: Mapping[str, Any], attempts: int = 6) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(self.client.log_batch, run_id, tags=items, attempts=attempts)

    def finish(self, run_id: str, state: str, attempts: int = 6) -> None:
        """End a child run as ``completed``, ``stopped_early`` or ``errored``."""
        if state not in TRIAL_STATES:
            raise ValueError(f"unknown trial state {state!r}")
        self.set_tags(run_id, {STATE_TAG: state}, attempts=attempts)
        _retry(self.client.set_terminated, run_id, status=_RUN_STATUS[state], attempts=attempts)

    def finish_parent(self, run_id: str, failed: bool = False) -> None:
        _retry(self.client.set_terminated, run_id, status="FAILED" if failed else "FINISHED")

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            _retry(self.client.log_artifacts, run_id, str(path), artifact_path)
        else:
            _retry(self.client.log_artifact, run_id, str(path), artifact_path)


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text[:6000]


@contextlib.contextmanager
def bounded_http(timeout_s: int = 5) -> Iterator[None]:
    """Make a dead tracking server fail in seconds rather than after minutes of retries."""
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _retry(func: Any, *args: Any, attempts: int = 6, **kwargs: Any) -> Any:
    """Call ``func``, waiting out sqlite's 'database is locked' when trials log together."""
    for attempt in range(attempts):
        try:
            return func(*args, **kwargs)
        except Exception as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")
