"""The OpenLineage emitter: every pipeline run and step run as OpenLineage RunEvents.

Configuration is OpenLineage's own (``openlineage.yml``, ``OPENLINEAGE__…`` variables, ``OPENLINEAGE_URL``,
``OPENLINEAGE_DISABLED``). Without any, events are built as plain dicts and appended, as they happen, to
``$ISTHMUS_HOME/lineage/events.jsonl`` (:mod:`isthmus.lineage.events`, :mod:`isthmus.lineage.filesink`):
no thread, no ``openlineage-python`` import. A configured transport (or a client handed to the emitter)
gets the client's event objects from one background thread, in order, so a slow or dead receiver never
stalls a step.

Failures are reported as one warning that says how many events were not delivered and why: when the
events are flushed (:meth:`OpenLineageEmitter.flush`, and at interpreter exit, bounded by
``EXIT_FLUSH_SECONDS``), or ``REPORT_AFTER_SECONDS`` after the first failure in a long-running process.
Events dropped after that warning are counted in one last line at exit.
"""

from __future__ import annotations

import atexit
import datetime as dt
import importlib
import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import isthmus
from isthmus.config import get_settings
from isthmus.fingerprint.code import shown_source
from isthmus.fingerprint.environment import git_info
from isthmus.lineage import events as dict_events
from isthmus.lineage.errors import UnknownRunStatus
from isthmus.lineage.facets import backend_run_facets, datasets, environment_facet, resources_facet, run_facets
from isthmus.lineage.filesink import FileSink
from isthmus.lineage.naming import namespace, step_job_name, step_job_namespace, step_run_uuid
from isthmus.lineage.parent import ROOT_KEY, RUN_ID_KEY, external_parent
from isthmus.records import PipelineRunRecord, RunStatus, StepRunRecord
from isthmus.redaction import redact_url, scrub, secret_values

log = logging.getLogger("isthmus.lineage")

PRODUCER = "https://github.com/isthmus-dev/isthmus"
EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]
# The event that reports a run in each status: total over RunStatus (a test checks it), so a status
# never turns into OTHER by accident. A failed attempt that is retried is a failed run of its own.
END_EVENT_TYPES: Mapping[RunStatus, EventType] = MappingProxyType(
    {
        RunStatus.RUNNING: "RUNNING",
        RunStatus.WAITING: "OTHER",
        RunStatus.RETRY: "FAIL",
        RunStatus.COMPLETED: "COMPLETE",
        RunStatus.FAILED: "FAIL",
        RunStatus.ABORTED: "ABORT",
    }
)
_STATUS_TEXTS = tuple(s.value for s in RunStatus)
# Runs of these orchestrators get their lineage from the orchestrator's own integration.
_EMITTED_ELSEWHERE = {"airflow"}
EXIT_FLUSH_SECONDS = 5.0  # how long a finishing process waits for its events to go out
REPORT_AFTER_SECONDS = 5.0  # a long-running process reports failures this long after the first one


def end_event_type(record: Mapping[str, Any]) -> EventType:
    """The OpenLineage event type that ends the run ``record`` (a step-run or pipeline-run record)
    describes. An unknown status raises :class:`UnknownRunStatus` instead of becoming OTHER."""
    status = record.get("status")
    if isinstance(status, str) and status in _STATUS_TEXTS:
        return END_EVENT_TYPES[RunStatus(status)]
    raise UnknownRunStatus(
        f"run {record.get('id')!r}: status {status!r} is not a run status ({', '.join(_STATUS_TEXTS)}); "
        "set the status from isthmus.records.RunStatus"
    )


def _identifiable(step_run: Mapping[str, Any]) -> bool:
    """Whether a run id can be derived (a waiting job adopted without its chosen id: not)."""
    native = (step_run.get("context") or {}).get("native") or {}
    return bool(step_run.get("pipeline_run_id") or native.get(RUN_ID_KEY) or step_run.get("id"))


def env_configured() -> bool:
    """Whether the environment configures an OpenLineage transport (``OPENLINEAGE_URL`` or
    ``OPENLINEAGE__TRANSPORT...``)."""
    return bool(os.environ.get("OPENLINEAGE_URL")) or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in os.environ)


def configured() -> bool:
    """Whether OpenLineage has a transport configured by the user (file, env or yaml)."""
    return env_configured() or _yaml_config_path() is not None


def _yaml_config_path() -> str | None:
    """Where OpenLineage's client finds ``openlineage.yml`` (``OPENLINEAGE_CONFIG``, the working directory,
    ``~/.openlineage``), looked up the same way without importing it."""
    for path in (
        os.environ.get("OPENLINEAGE_CONFIG"),
        os.path.join(os.getcwd(), "openlineage.yml"),
        os.path.join(os.path.expanduser("~/.openlineage"), "openlineage.yml"),
    ):
        try:
            if path and os.path.isfile(path) and os.access(path, os.R_OK):
                return path
        except Exception:
            continue
    return None


def file_sink_path() -> Path:
    """Where the default file lineage appends its events."""
    return get_settings().home / "lineage" / "events.jsonl"


def make_client() -> Any:
    """OpenLineage's client from its own configuration, or a file transport under isthmus's home."""
    from openlineage.client import OpenLineageClient

    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true" or configured():
        return OpenLineageClient()
    path = file_sink_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return OpenLineageClient(config={"transport": {"type": "file", "log_file_path": str(path), "append": True}})


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    return dt.datetime.now(dt.timezone.utc).isoformat()


class OpenLineageEmitter:
    """A LineageHook that builds OpenLineage events and sends them from a background thread."""

    def __init__(self, client: Any | None = None, *, max_queue: int = 10_000, cooldown: float = 60.0) -> None:
        self._client = client
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.cooldown = cooldown  # after a failed send, events are dropped this long (no pile-up)
        self._paused_until = 0.0
        self.sent = 0
        self.failed = 0  # events not delivered: failed sends, and events dropped while paused or queue-full
        self._first_error: str | None = None
        self._reported = 0  # undelivered events already counted in a warning
        self._timer: threading.Timer | None = None
        self._sink: FileSink | None = None
        self._sink_chosen = client is not None  # with a client of its own, events go to it

    # -- LineageHook -----------------------------------------------------------------------------
    def on_pipeline_start(self, run: PipelineRunRecord) -> None:
        if run.get("orchestrator") not in _EMITTED_ELSEWHERE:
            self._submit("pipeline", run, "START")

    def on_pipeline_end(self, run: PipelineRunRecord) -> None:
        if run.get("orchestrator") not in _EMITTED_ELSEWHERE:
            self._submit("pipeline", run, end_event_type(run))

    def on_step_start(self, step_run: StepRunRecord) -> None:
        if self._wanted(step_run):
            self._submit("step", step_run, "START")

    def on_step_end(self, step_run: StepRunRecord) -> None:
        if self._wanted(step_run):
            self._submit("step", step_run, end_event_type(step_run))

    def on_step_hit(self, step_run: StepRunRecord) -> None:
        """START and the end event of a step run that ended as it started (a cache hit): to the file, the
        end event is the START with the outputs, and both lines go out in one write."""
        if not self._wanted(step_run):
            return
        try:
            end_type = end_event_type(step_run)
        except UnknownRunStatus:  # the start is still reported; the end's error reaches the caller
            self._submit("step", step_run, "START")
            raise
        sink = self._file_sink()
        if sink is None or end_type == "FAIL":
            self._submit("step", step_run, "START")
            self._submit("step", step_run, end_type)
            return
        try:
            start = self._step_dict(step_run, "START")
            end = dict_events.ended(start, step_run, end_type, step=_step_object(step_run))
            sink.write(dict_events.to_json_line(start) + dict_events.to_json_line(end))
            with self._lock:
                self.sent += 2
        except Exception as exc:  # lineage never fails a step
            self._failed(exc)
            self._failed(exc)

    @staticmethod
    def _wanted(step_run: Mapping[str, Any]) -> bool:
        # A run handed a parent (a batch job an Airflow task started) is a run of its own: emitted here.
        if step_run.get("orchestrator") in _EMITTED_ELSEWHERE and not external_parent(step_run):
            return False
        step = _step_object(step_run)
        return step is None or getattr(step, "enable_lineage", True)

    def on_step_waiting(self, step_run: StepRunRecord) -> None:
        """OTHER: the step is waiting (e.g. its batch job is pending)."""
        if self._wanted(step_run) and _identifiable(step_run):
            self._submit("step", step_run, "OTHER")

    def emit_now(self, event: str, payload: StepRunRecord) -> bool:
        """Build and send one event in this thread (``event``: a hook method name); True if sent.
        For callers without a thread to spare, e.g. an Airflow trigger (run it in a worker thread)."""
        event_types: dict[str, EventType] = {"on_step_waiting": "OTHER", "on_step_start": "START"}
        if event not in event_types or not self._wanted(payload) or not _identifiable(payload):
            return False
        try:
            sink = self._file_sink()
            if sink is not None:
                sink.write(dict_events.to_json_line(self._step_dict(payload, event_types[event])))
            else:
                if self._client is None:
                    self._client = make_client()
                self._client.emit(self._step_event(payload.copy(), event_types[event]))
            with self._lock:
                self.sent += 1
            return True
        except Exception as exc:  # lineage never fails the caller
            self._failed(exc)
            return False

    # -- queueing --------------------------------------------------------------------------------
    def _file_sink(self) -> FileSink | None:
        """The default file lineage's sink, or None when events go to an OpenLineage client (one handed
        to the emitter, or a transport the user configured). Chosen on the first event."""
        if not self._sink_chosen:
            with self._lock:
                if not self._sink_chosen:
                    disabled = os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true"
                    if not (disabled or configured()):
                        self._sink = FileSink(file_sink_path())
                    self._sink_chosen = True
        return self._sink

    def _step_dict(self, step_run: Mapping[str, Any], event_type: EventType) -> dict[str, Any]:
        return dict_events.step_event(
            step_run, event_type, job_facets=_source_dicts(step_run), step=_step_object(step_run)
        )

    def _submit(self, kind: Literal["step", "pipeline"], payload: Mapping[str, Any], event_type: EventType) -> None:
        sink = self._file_sink()
        if sink is not None:  # built and written here and now: in order, nothing left in memory
            try:
                if kind == "step":
                    built = self._step_dict(payload, event_type)
                else:
                    built = dict_events.pipeline_event(payload, event_type)
                sink.write(dict_events.to_json_line(built))
                with self._lock:  # steps of a fan-out emit from several threads
                    self.sent += 1
            except Exception as exc:  # lineage never fails a step
                self._failed(exc)
            return
        # Built and sent in the background: the runner hands over payloads it no longer changes.
        build = self._step_event if kind == "step" else self._pipeline_event
        event = (build, dict(payload), event_type)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="isthmus-openlineage", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._failed(None, "the OpenLineage queue is full")

    def _worker(self) -> None:
        while True:
            build, payload, event_type = self._queue.get()
            try:
                if time.monotonic() < self._paused_until:
                    self._failed(None)  # the receiver failed moments ago: drop instead of waiting again
                    continue
                event = build(payload, event_type)
                if self._client is None:
                    self._client = make_client()
                self._client.emit(event)
                self.sent += 1
            except Exception as exc:  # lineage never fails a step
                self._paused_until = time.monotonic() + self.cooldown
                self._failed(exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until queued events are sent (at most ``timeout`` seconds); True if all went out.
        Events that could not be delivered are then reported in one warning."""
        deadline = time.monotonic() + timeout
        done = True
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                done = False
                break
            time.sleep(0.01)
        self._report(unsent=self._queue.unfinished_tasks, waited=None if done else timeout)
        return done

    def close(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """At exit: flush for at most ``timeout`` seconds and report what was not delivered."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush(timeout)
        if self._sink is not None:
            self._sink.close()

    def _failed(self, exc: BaseException | None, why: str | None = None) -> None:
        """Count one undelivered event; the first failure's reason goes into the warning."""
        with self._lock:
            self.failed += 1
            if self._first_error is None and (exc is not None or why):
                self._first_error = why or f"{type(exc).__name__}: {exc}"
            if self._timer is None:
                self._timer = threading.Timer(REPORT_AFTER_SECONDS, self._report)
                self._timer.daemon = True
                self._timer.start()

    def _report(self, unsent: int = 0, waited: float | None = None) -> None:
        """Log what was not delivered since the last report: one warning with the count and the reason."""
        with self._lock:
            undelivered = self.failed + unsent
            new = undelivered - self._reported
            if new <= 0:
                return
            first = self._reported == 0
            self._reported = undelivered
            reason = self._first_error
        if reason is None:
            reason = f"no answer from the receiver within {waited:g} s" if waited is not None else "unknown error"
        reason = scrub(" ".join(reason.split()), secret_values())[:300]
        if first:
            log.warning(
                "isthmus lineage: %d OpenLineage event(s) not delivered (%s); runs go on without them",
                undelivered,
                reason,
            )
        else:
            log.warning("isthmus lineage: %d more OpenLineage event(s) not delivered (%d in all)", new, undelivered)

    # -- events ----------------------------------------------------------------------------------
    def _base_run_facets(self, orchestrator: str) -> dict[str, Any]:
        from openlineage.client import __version__ as ol_version
        from openlineage.client.facet_v2 import processing_engine_run

        return {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=isthmus.__version__, name=f"isthmus/{orchestrator}", openlineageAdapterVersion=ol_version
            )
        }

    def _pipeline_event(self, run: PipelineRunRecord, event_type: EventType) -> Any:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run, job_type_job, nominal_time_run

        orchestrator = run.get("orchestrator") or "local"
        run_facets_: dict[str, Any] = self._base_run_facets(orchestrator)
        run_facets_["nominalTime"] = nominal_time_run.NominalTimeRunFacet(nominalStartTime=_iso(run.get("started_at")))
        if run.get("error") and event_type in ("FAIL", "ABORT"):
            run_facets_["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(run["error"]), programmingLanguage="python"
            )
        job_facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ISTHMUS", jobType="DAG")
        }
        return RunEvent(
            eventType=RunState[event_type],
            eventTime=dt.datetime.now(dt.timezone.utc).isoformat(),
            run=Run(runId=str(run["id"]), facets=run_facets_),
            job=Job(namespace=namespace(), name=str(run.get("pipeline")), facets=job_facets),
            producer=PRODUCER,
        )

    def _step_event(self, step_run: StepRunRecord, event_type: EventType) -> Any:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run, job_type_job, parent_run

        ctx = step_run.get("context") or {}
        native = ctx.get("native") or {}
        orchestrator = step_run.get("orchestrator") or ctx.get("orchestrator") or "local"
        pipeline = ctx.get("pipeline_name")
        job_name = step_job_name(step_run)
        facets: dict[str, Any] = self._base_run_facets(orchestrator)
        facets.update(run_facets(step_run))
        facets["isthmus_environment"] = environment_facet(step_run)
        facets["isthmus_resources"] = resources_facet(step_run)
        facets.update(backend_run_facets(step_run))
        job_namespace = step_job_namespace(step_run)
        external = external_parent(step_run)
        parent = None
        if external:
            parent = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=external["run_id"]),
                job=parent_run.Job(namespace=external["namespace"], name=external["job_name"]),
            )
        elif step_run.get("pipeline_run_id") and pipeline:
            parent = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=str(step_run["pipeline_run_id"])),
                job=parent_run.Job(namespace=namespace(), name=str(pipeline)),
            )
        root = native.get(ROOT_KEY)
        if parent is not None and isinstance(root, dict) and root.get("run_id") and root.get("job_name"):
            parent.root = parent_run.Root(
                run=parent_run.RootRun(runId=str(root["run_id"])),
                job=parent_run.RootJob(namespace=root.get("namespace") or namespace(), name=str(root["job_name"])),
            )
        if parent is not None:
            facets["parent"] = parent
        if event_type == "FAIL" and step_run.get("error"):
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(step_run["error"]), programmingLanguage="python", stackTrace=step_run.get("traceback")
            )
        job_facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ISTHMUS", jobType="TASK")
        }
        job_facets.update(_source_facets(step_run))
        inputs = datasets(step_run.get("inputs") or {}, output=False)
        outputs = datasets(step_run.get("outputs") or {}, output=True) if event_type != "START" else []
        step = _step_object(step_run)
        if step is not None:
            from openlineage.client.event_v2 import InputDataset, OutputDataset

            inputs += [InputDataset(namespace=ns, name=name) for ns, name in getattr(step, "lineage_inputs", ())]
            outputs += [OutputDataset(namespace=ns, name=name) for ns, name in getattr(step, "lineage_outputs", ())]
        return RunEvent(
            eventType=RunState[event_type],
            eventTime=dt.datetime.now(dt.timezone.utc).isoformat(),
            run=Run(runId=step_run_uuid(step_run), facets=facets),
            job=Job(namespace=job_namespace, name=job_name, facets=job_facets),
            inputs=inputs,
            outputs=outputs,
            producer=PRODUCER,
        )


_source_cache: dict[str, dict[str, Any]] = {}


def _source_facets(step_run: StepRunRecord) -> dict[str, Any]:
    """Job facets from the step's code: ``sourceCode``, ``sourceCodeLocation`` (git), ``ownership`` and
    ``tags`` (when set on the step). Looked up once per step per process."""
    key = str(step_run.get("step_path"))
    if key not in _source_cache:
        _source_cache[key] = _find_source_facets(step_run)
    return _source_cache[key]


_source_dict_cache: dict[str, dict[str, Any]] = {}


def _source_dicts(step_run: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`_source_facets` as plain dicts (the default file lineage). Looked up once per step per process."""
    key = str(step_run.get("step_path"))
    if key not in _source_dict_cache:
        _source_dict_cache[key] = dict_events.source_facets(_step_object(step_run))
    return _source_dict_cache[key]


_step_cache: dict[str, Any] = {}


def _step_object(step_run: Mapping[str, Any]) -> Any:
    """The Step (or function) named by the run's import path, when its module is importable here."""
    path = str(step_run.get("step_path") or "")
    if path not in _step_cache:
        module_name, _, qualname = path.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception:
            obj = None
        _step_cache[path] = obj
    return _step_cache[path]


def _find_source_facets(step_run: StepRunRecord) -> dict[str, Any]:
    from openlineage.client.facet_v2 import source_code_job, source_code_location_job

    out: dict[str, Any] = {}
    obj = _step_object(step_run)
    if obj is None:
        return out
    try:
        fn = getattr(obj, "fn", obj)
        out["sourceCode"] = source_code_job.SourceCodeJobFacet(language="python", sourceCode=shown_source(fn))
        path = inspect.getsourcefile(fn)
    except Exception:
        return out
    owner, tags = getattr(obj, "owner", None), getattr(obj, "tags", ())
    if owner:
        from openlineage.client.facet_v2 import ownership_job

        out["ownership"] = ownership_job.OwnershipJobFacet(owners=[ownership_job.Owner(name=str(owner))])
    if tags:
        from openlineage.client.facet_v2 import tags_job

        out["tags"] = tags_job.TagsJobFacet(
            tags=[tags_job.TagsJobFacetFields(key=str(t), value="true", source="isthmus") for t in tags]
        )
    git = git_info(os.path.dirname(path)) if path else None
    if path and git and git.get("remote") and git.get("root"):
        out["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git",
            url=redact_url(git["remote"]),
            repoUrl=redact_url(git["remote"]),
            path=os.path.relpath(path, git["root"]),
            version=git["commit"],
            branch=git.get("branch"),
        )
    return out


_emitter: OpenLineageEmitter | None = None


def default_emitter() -> OpenLineageEmitter:
    """The process's emitter, made on first use (flushed at exit)."""
    global _emitter
    if _emitter is None:
        _emitter = OpenLineageEmitter()
        atexit.register(_emitter.close)
    return _emitter


def drop_default_emitter(timeout: float = EXIT_FLUSH_SECONDS) -> OpenLineageEmitter | None:
    """Flush the process's emitter (at most ``timeout`` seconds) and forget it, so the next use makes a
    new one from the configuration then; returns the dropped emitter (None if there was none)."""
    global _emitter
    emitter = _emitter
    if emitter is not None:
        emitter.flush(timeout)
        if emitter._sink is not None:
            emitter._sink.close()
        _emitter = None
    return emitter
