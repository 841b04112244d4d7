"""The ``retrainer`` command. Heavy libraries are imported inside each command, never at start-up."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect import State

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REJECTED = 2
# Commands that run a flow in this process against the configured server (Prefect is imported by them
# anyway). Not the demo: it points Prefect at the server it starts, which must happen before Prefect loads.
FLOW_COMMANDS = {"ingest", "observe", "label", "retrain", "monitor", "rollback"}
_ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="retrainer",
        description="Event-driven retraining for LightGBM models on Prefect and MLflow.",
        epilog="Config: ./retrainer.yaml or $RETRAINER_CONFIG. State: ./.retrainer or $RETRAINER_HOME.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (one line otherwise)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="check labelled files and store them as batches")
    ingest.add_argument("--model", required=True)
    ingest.add_argument("files", nargs="+", metavar="FILE")
    ingest.set_defaults(handler=_ingest)

    observe = commands.add_parser("observe", help="store unlabelled inference files (features, time, id) as traffic")
    observe.add_argument("--model", required=True)
    observe.add_argument("files", nargs="+", metavar="FILE")
    observe.set_defaults(handler=_observe)

    label = commands.add_parser("label", help="join late label files (id, target) to the observed traffic")
    label.add_argument("--model", required=True)
    label.add_argument("files", nargs="+", metavar="FILE")
    label.set_defaults(handler=_label)

    retrain = commands.add_parser("retrain", help="train a challenger and judge it against the champion")
    retrain.add_argument("--model", required=True)
    retrain.add_argument("--reason", default="manual")
    retrain.set_defaults(handler=_retrain)

    monitor = commands.add_parser("monitor", help="check the newest batches for drift against the champion")
    monitor.add_argument("--model", required=True)
    monitor.add_argument("--batch", dest="batch_id", metavar="ID", help="check this accepted batch only")
    monitor.add_argument(
        "--traffic", action="store_true", help="check the unlabelled inference traffic instead of labelled batches"
    )
    monitor.add_argument("--json", action="store_true", help="print the check summary as one JSON object")
    monitor.set_defaults(handler=_monitor)

    migrate = commands.add_parser(
        "migrate", help="move the state of the file layout (history, incidents, manifests) into the stores in force"
    )
    migrate.add_argument("--from-home", type=Path, help="the old RETRAINER_HOME (default: RETRAINER_HOME)")
    migrate.add_argument(
        "--from-data",
        type=Path,
        help="the old data root (default: the local data store in force, else <old home>/data)",
    )
    migrate.add_argument("--dry-run", action="store_true", help="report what would move; write nothing")
    migrate.set_defaults(handler=_migrate)

    check = commands.add_parser("check", help="reach the data store and the metadata store once, naming any fault")
    check.set_defaults(handler=_check)

    rollback = commands.add_parser("rollback", help="move @champion back to an earlier version")
    rollback.add_argument("--model", required=True)
    rollback.add_argument("--to", dest="to_version", metavar="VERSION")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("--force", action="store_true", help="allow a version that never passed a judgement")
    rollback.set_defaults(handler=_rollback)

    status = commands.add_parser("status", help="champion, data and latest decisions of a model")
    status.add_argument("--model", required=True)
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(handler=_status)

    start = commands.add_parser("up", help="start a local Prefect server (and the MLflow UI) in the background")
    start.add_argument("--port", type=int, default=4200)
    start.add_argument("--mlflow-port", type=int, help="also start the MLflow UI on this port")
    start.set_defaults(handler=_up)

    stop = commands.add_parser("down", help="stop what 'retrainer up' started")
    stop.set_defaults(handler=_down)

    serve = commands.add_parser("serve", help="serve every deployment with its triggers and schedules")
    serve.set_defaults(handler=_serve)

    webhook = commands.add_parser("webhook", help="receive signed drift alerts and new-data notices over HTTP")
    webhook.add_argument("--host", default="127.0.0.1")
    webhook.add_argument("--port", type=int, default=8765)
    webhook.add_argument(
        "--insecure-local", action="store_true", help="accept unsigned requests (loopback only, for trials)"
    )
    webhook.set_defaults(handler=_webhook)

    send = commands.add_parser("send", help="sign and post a drift alert or a new-data notice to a receiver")
    send.add_argument("--url", default="http://127.0.0.1:8765", help="receiver base URL, or a full hook URL")
    send.add_argument("--source", default="external", help="who is sending (named in the event)")
    messages = send.add_subparsers(dest="message", required=True, metavar="MESSAGE")
    drift = messages.add_parser("drift", help="a drift alert: a share and columns, or an Evidently snapshot")
    drift.add_argument("--model", required=True)
    drift.add_argument("--share", type=float, help="share of drifted columns (0..1)")
    drift.add_argument("--column", action="append", dest="columns", default=[], help="a drifted column (repeat)")
    drift.add_argument("--snapshot", type=Path, help="Evidently snapshot JSON (snapshot.json())")
    drift.add_argument("--compact", action="store_true", help="send the snapshot's share and columns only")
    drift.add_argument("--report-uri")
    drift.add_argument("--alert-id", help="id of this alert (default: digest of its content)")
    drift.set_defaults(handler=_send)
    data = messages.add_parser("data", help="a new-data notice: labelled files, inference traffic or labels")
    data.add_argument("--model", required=True)
    data.add_argument("--kind", choices=["labelled", "inference", "labels"], default="labelled")
    data.add_argument("--notice-id", help="id of this notice (default: digest of its content)")
    data.add_argument("files", nargs="+", metavar="FILE")
    data.set_defaults(handler=_send)

    render = commands.add_parser("prefect-yaml", help="write prefect.yaml for the configured models")
    render.add_argument("--output", type=Path, default=Path("prefect.yaml"))
    render.add_argument(
        "--pool-type",
        choices=["process", "docker", "kubernetes"],
        default="process",
        help="the work pool's type; docker and kubernetes add each deployment's image, env and resources",
    )
    render.add_argument("--image", default="retrainer:0.1.0", help="the image containers run (docker, kubernetes)")
    render.set_defaults(handler=_prefect_yaml)

    demo = commands.add_parser("demo", help="run the whole story on generated data")
    demo.add_argument("--workdir", type=Path, default=Path("demo"))
    demo.add_argument("--keep", action="store_true", help="leave the server and the serving process running")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    # Prefect's temporary server (used when no PREFECT_API_URL is set) needs more than its default
    # 20 s to start on a busy 2-core host.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    handler: Callable[[argparse.Namespace], int] = args.handler
    from retrainer.errors import RetrainerError

    if not args.debug and args.command in FLOW_COMMANDS:
        _one_line_errors()
    try:
        return handler(args)
    except RetrainerError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            raise
        # Anything not translated into a domain error still ends in one line; --debug shows where.
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: {type(exc).__name__}: {first} (--debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


class _EngineErrorsAsOneLine(logging.Filter):
    """Console filter: drops the engine's failure reports (the command's last line states the failure)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(_ENGINE_LOGGERS) and record.levelno >= logging.ERROR:
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _one_line_errors() -> None:
    """Make a failed flow command print one line: the run's final state, without tracebacks.

    Prefect's engine logs each failed task and flow run at ERROR with its traceback, and MLflow's
    HTTP client warns on every retry; both say what the last line already says. Only the console is
    filtered: Prefect's API handler has already sent the full record (traceback included) to the
    run's logs in the UI by the time a console handler sees it.
    """
    import prefect.main  # noqa: F401 - sets up Prefect's logging, which this then adjusts

    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.Logger.manager.loggerDict)]
    for logger in loggers:
        for handler in logger.handlers:
            prefects_console = isinstance(handler, logging.StreamHandler) and type(handler).__module__.startswith(
                "prefect."
            )
            if prefects_console and not any(isinstance(f, _EngineErrorsAsOneLine) for f in handler.filters):
                handler.addFilter(_EngineErrorsAsOneLine())


def _ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest

    state = ingest(model=args.model, files=[str(f) for f in args.files], return_state=True)
    return _report_state(state, ok_names={"Accepted"}, rejected_exit=EXIT_REJECTED)


def _observe(args: argparse.Namespace) -> int:
    from flows.observe import observe

    state = observe(model=args.model, files=[str(f) for f in args.files], return_state=True)
    return _report_state(state, ok_names={"Accepted"}, rejected_exit=EXIT_REJECTED)


def _label(args: argparse.Namespace) -> int:
    from flows.label import label

    state = label(model=args.model, files=[str(f) for f in args.files], return_state=True)
    return _report_state(state, ok_names={"Accepted"}, rejected_exit=EXIT_REJECTED)


def _retrain(args: argparse.Namespace) -> int:
    from flows.retrain import retrain
    from retrainer.cycle.decide import Outcome

    state = retrain(model=args.model, reason=args.reason, return_state=True)
    return _report_state(state, ok_names={outcome.value for outcome in Outcome})


def _monitor(args: argparse.Namespace) -> int:
    import json

    from flows.monitor import monitor
    from retrainer.monitor.incidents import Action

    kind = "inference" if args.traffic else "labelled"
    state = monitor(model=args.model, batch_id=args.batch_id, kind=kind, return_state=True)
    ok_names = {action.value for action in Action} | {"NoNewData"}
    if not (args.json and state.is_completed()):
        return _report_state(state, ok_names=ok_names, rejected_exit=EXIT_REJECTED)
    checked = state.name in {action.value for action in Action}
    nothing: dict[str, object] = {
        "action": state.name,
        "drift_detected": None,
        "drift_share": None,
        "columns": {},
        "prediction": None,
        "performance": None,
        "incident": None,
    }
    print(json.dumps(state.result() if checked else {**nothing, "message": state.message}))
    return EXIT_OK if state.name in ok_names else EXIT_REJECTED


def _rollback(args: argparse.Namespace) -> int:
    from flows.rollback import rollback

    state = rollback(
        model=args.model, reason=args.reason, to_version=args.to_version, force=args.force, return_state=True
    )
    return _report_state(state, ok_names={"RolledBack"})


def _report_state(state: State, ok_names: set[str], rejected_exit: int = EXIT_ERROR) -> int:
    line = f"{state.name}: {state.message or ''}"
    if not state.is_completed():
        print(line, file=sys.stderr)
        return EXIT_ERROR
    if state.name in ok_names:
        print(line)
        return EXIT_OK
    print(line, file=sys.stderr)
    return rejected_exit


def _status(args: argparse.Namespace) -> int:
    from retrainer.app.status import model_status, render_json, render_text
    from retrainer.workspace import Workspace

    status = model_status(Workspace.open(), args.model)
    print(render_json(status) if args.json else render_text(status))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from retrainer.workspace import Workspace

    storage = Workspace.open().storage
    storage.check()
    print(f"data store {storage.blobs.url}: reachable")
    print(f"metadata store {storage.metadata.display}: reachable, tables in place")
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    from retrainer.app.migrate import migrate
    from retrainer.workspace import Workspace

    workspace = Workspace.open()
    settings = workspace.settings
    home = args.from_home or settings.home
    # A local data store in force is where the file layout kept its batches too (RETRAINER_DATA_ROOT).
    local = None if settings.data_location.startswith("s3://") else Path(settings.data_location)
    old_data = args.from_data or (local if args.from_home is None and local is not None else home / "data")
    done = migrate(home, old_data, workspace.storage, dry_run=args.dry_run)
    verb = "would move" if args.dry_run else "moved"
    for line in done.moved:
        print(f"{verb}  {line}")
    for line in done.skipped:
        print(f"skipped  {line}")
    print(f"{done.copied_objects} data object(s) {'to copy' if args.dry_run else 'copied'}")
    return EXIT_OK


def _up(args: argparse.Namespace) -> int:
    from deployments.local_server import up
    from retrainer.config import load_settings

    urls = up(load_settings(), args.port, args.mlflow_port)
    print(f"Prefect UI   {urls['prefect_ui']}")
    if "mlflow_ui" in urls:
        print(f"MLflow UI    {urls['mlflow_ui']}")
    print(f"export PREFECT_API_URL={urls['prefect_api']}")
    return EXIT_OK


def _down(args: argparse.Namespace) -> int:
    from deployments.local_server import down
    from retrainer.config import load_settings

    stopped = down(load_settings())
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from deployments.serve import main as serve

    serve()
    return EXIT_OK


def _webhook(args: argparse.Namespace) -> int:
    import logging

    from deployments.webhook import run
    from retrainer.workspace import Workspace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workspace = Workspace.open()
    run(workspace.settings, workspace.project, args.host, args.port, args.insecure_local)
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    import json

    from pydantic import BaseModel

    from retrainer.config import load_settings
    from retrainer.inbound.sender import data_notice, drift_alert, post

    message: BaseModel
    if args.message == "drift":
        message = drift_alert(
            args.model,
            source=args.source,
            drift_share=args.share,
            columns=args.columns,
            snapshot=args.snapshot,
            compact=args.compact,
            report_uri=args.report_uri,
            alert_id=args.alert_id,
        )
    else:
        message = data_notice(args.model, args.files, source=args.source, notice_id=args.notice_id, kind=args.kind)
    secret = load_settings().webhook_secret
    if secret is None:
        print("warning: RETRAINER_WEBHOOK_SECRET is not set: sending unsigned", file=sys.stderr)
    url = args.url if "/hooks/" in args.url else f"{args.url.rstrip('/')}/hooks/{args.message}"
    answer = post(url, message, secret.get_secret_value() if secret else None)
    print(json.dumps({"status": answer.status, **answer.body}), file=sys.stdout if answer.ok else sys.stderr)
    return EXIT_OK if answer.ok else EXIT_ERROR


def _prefect_yaml(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from deployments.prefect_yaml import render
    from retrainer.workspace import Workspace

    text = render(Workspace.open().project, version("prefect"), args.pool_type, args.image)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from retrainer.app.demo import run_demo

    return run_demo(args.workdir, keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
