"""``radassist`` command line: run or compile the training pipeline, serve models."""

import argparse
import json
import logging
import os
import sys

from pipelines import configs

log = logging.getLogger("radassist")


class DataDirError(SystemExit):
    """No usable data directory; exits with a message instead of a stack trace."""


def resolve_data_dir(explicit: str | None, repo_root: str) -> tuple[str, bool]:
    """--data, else $RADASSIST_DATA_DIR, else ./data/chest-ct, else the committed sample (flagged True)."""
    candidate = explicit or os.environ.get("RADASSIST_DATA_DIR")
    if candidate:
        if not os.path.isdir(candidate):
            raise DataDirError(f"data directory not found: {candidate}")
        return os.path.abspath(candidate), False
    default = os.path.join(repo_root, configs.DATA_SUBDIR)
    if os.path.isdir(default):
        return default, False
    return os.path.join(repo_root, configs.SAMPLE_DATA_SUBDIR), True


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _training_options(args) -> dict:
    training = json.loads(args.training_json) if args.training_json else {}
    if args.seed is not None:
        training["seed"] = args.seed
    if args.recipe:
        training["recipe"] = args.recipe
    if args.weights:
        training["weights"] = args.weights
    if args.quick:
        training.update(augmented_views=2, head_epochs=3, finetune_epochs=1)
    return training


def cmd_pipeline_run(args) -> int:
    from tfx import v1 as tfx

    from pipelines.local_runner import LocalSettings, build
    from radassist.progress import PipelineProgress
    from radassist.summary import format_summary, read_summary

    data_root, is_sample = resolve_data_dir(args.data, _repo_root())
    if is_sample:
        banner = "!" * 100
        print(f"{banner}\n  NO DATASET CONFIGURED: training on the 120-image SAMPLE in {data_root}.\n"
              "  The model will be a demo, not a usable classifier. Download the Kaggle 'Chest CT-Scan images' set\n"
              "  into data/chest-ct (train/valid/test/<class>/...) or pass --data / set RADASSIST_DATA_DIR.\n"
              f"{banner}", file=sys.stderr)
    settings = LocalSettings(
        data_root=data_root,
        output_dir=args.output or os.environ.get("RADASSIST_OUTPUT_DIR") or os.path.join(_repo_root(),
                                                                                           configs.OUTPUT_SUBDIR),
        model_base=args.model_base or os.environ.get("RADASSIST_MODEL_BASE", ""),
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        training=_training_options(args),
        accuracy_floor=args.accuracy_floor if args.accuracy_floor is not None else (0.0 if is_sample else
                                                                                    configs.ACCURACY_FLOOR),
        beam_pipeline_args=args.beam_arg or ["--direct_num_workers=1"],
    )
    print(f"data {settings.data_root}\noutput {settings.output_dir}\nmodels {settings.model_base}\n"
          f"MLflow {settings.mlflow_tracking_uri}", file=sys.stderr)
    pipeline = build(settings)
    with PipelineProgress(settings.metadata_path, [c.id for c in pipeline.components]):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    print(format_summary(read_summary(settings.metadata_path)))
    return 0


def cmd_pipeline_compile(args) -> int:
    from pipelines.kubeflow_runner import compile_pipeline, submit

    path = compile_pipeline(
        output_file=args.output,
        image=args.image,
        pipeline_root=args.pipeline_root,
        data_root=args.data,
        model_base=args.model_base,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        training=_training_options(args),
        beam_pipeline_args=args.beam_arg,
    )
    print(f"wrote {path}")
    if args.submit:
        run_id = submit(path, args.submit, schedule=args.schedule)
        print(f"{'recurring run' if args.schedule else 'run'} created: {run_id}")
    return 0


def cmd_serve(args) -> int:
    from serving.authentication import TlsFiles, read_file
    from serving.batching import BatchingOptions
    from serving.model_store import VersionPolicy
    from serving.server import JsonLogFormatter, ServerConfig, serve
    from serving.validation import RequestLimits

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("serve: --tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise SystemExit("serve: --tls-client-ca needs --tls-cert and --tls-key")
    token = None
    if args.token_file:
        token = read_file(args.token_file).decode().strip()
        if len(token) < 16:
            raise SystemExit(f"serve: the token in {args.token_file} is shorter than 16 characters")

    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    config = ServerConfig(
        model_base_path=args.model_base_path,
        model_names=args.model_name,
        grpc_port=args.grpc_port,
        rest_port=args.rest_port,
        host=args.host,
        policy=VersionPolicy(latest=args.latest_versions, pinned=tuple(args.pin_version or ())),
        batching=BatchingOptions(enabled=args.enable_batching, max_batch_size=args.max_batch_size,
                                 batch_timeout_micros=args.batch_timeout_micros),
        poll_seconds=args.file_system_poll_wait_seconds,
        limits=RequestLimits(max_elements=args.max_request_elements, max_request_bytes=args.max_request_bytes),
        tls=TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None,
        token=token,
    )
    serve(config)
    return 0


def _portal_app():
    """The portal app, with its database migrated first, except in production, where `radassist migrate` runs
    once per release (infra/portal/migrate-job.yaml) instead of in every replica at once."""
    from portal import create_app
    from portal.database import upgrade

    app = create_app()
    if os.environ.get("RADASSIST_ENV") != "production":
        upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
    return app


def cmd_users_create(args) -> int:
    import getpass

    from portal.accounts import AccountError, create_user
    from portal.models import Role, User, db
    from portal.security import WeakPassword, record

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    app = _portal_app()
    with app.app_context():
        doctor = None
        if args.doctor:
            doctor = db.session.scalar(db.select(User).where(User.email == args.doctor.lower()))
        try:
            user = create_user(args.email, args.name, Role(args.role), password, doctor=doctor)
        except (AccountError, WeakPassword) as error:
            raise SystemExit(f"error: {error}") from error
        record(f"{args.role}_created", user, detail="created with the radassist CLI")
        db.session.commit()
        print(f"created {args.role} {user.email} (id {user.id})")
    return 0


def cmd_users_list(args) -> int:
    from portal.models import User, db

    app = _portal_app()
    with app.app_context():
        for user in db.session.scalars(db.select(User).order_by(User.role, User.email)):
            print(f"{user.id:>5}  {user.role:<8} {user.email:<40} {'active' if user.active else 'disabled'}")
    return 0


FIRST_ADMIN_EMAIL = "admin@radassist.local"


def ensure_first_admin(app) -> str | None:
    """Creates the first admin on first start; returns its one-time password (None if an admin exists)."""
    import secrets

    from portal.accounts import create_user
    from portal.models import Role, User, db
    from portal.security import record

    with app.app_context():
        if db.session.scalar(db.select(User.id).where(User.role == Role.ADMIN.value)) is not None:
            return None
        password = secrets.token_urlsafe(15)
        admin = create_user(FIRST_ADMIN_EMAIL, "RadAssist administrator", Role.ADMIN, password)
        record("admin_created", admin, detail="first admin, created on first start", actor=admin)
        db.session.commit()
        return password


def cmd_portal(args) -> int:
    """Migrates the database, creates the first admin if there is none, then runs gunicorn and the report workers
    under a supervisor that restarts whichever of them dies (portal/supervisor.py)."""
    from portal.supervisor import Child, Supervisor, worker_name

    app = _portal_app()
    password = ensure_first_admin(app)
    if password:
        print(f"First start: admin login {FIRST_ADMIN_EMAIL} / {password}  (shown once; change it after login)",
              file=sys.stderr)
    bind = f"{args.host}:{args.port}"
    print(f"RadAssist portal on http://{bind}", file=sys.stderr)
    if args.workers > 1 and str(app.config["RATELIMIT_STORAGE_URI"]).startswith("memory://"):
        print(f"note: login rate limits are counted per web process ({args.workers} of them); set "
              "RADASSIST_RATELIMIT_STORAGE_URI=redis://... to share them", file=sys.stderr)
    children = [Child("gunicorn", [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(args.workers),
                                   "--threads", "4", "--access-logfile", "-", "portal.wsgi:app"])]
    if args.report_workers:
        print(f"{args.report_workers} report worker(s), model server {app.config['MODEL_SERVER']}, queue "
              f"{app.config['JOB_QUEUE_URL'] or 'in the database'}", file=sys.stderr)
        children += [Child(f"report worker {i}", [sys.executable, "-m", "radassist.cli", "worker", "--name",
                                                  worker_name(i)]) for i in range(args.report_workers)]
    logging.getLogger("portal.supervisor").setLevel(logging.INFO)
    return Supervisor(children).run()


def cmd_migrate(args) -> int:
    """Brings the portal database to the newest schema (Alembic)."""
    from portal import create_app
    from portal.database import upgrade

    url = create_app().config["SQLALCHEMY_DATABASE_URI"]
    upgrade(url)
    print("database schema is up to date", file=sys.stderr)
    return 0


def cmd_worker(args) -> int:
    """Runs one report worker: analysis jobs -> model server -> draft reports."""
    from portal import worker

    logging.getLogger("portal").setLevel(logging.INFO)
    worker.main(_portal_app(), name=args.name)
    return 0


def _add_training_flags(parser) -> None:
    parser.add_argument("--seed", type=int, help="training seed (default 0)")
    parser.add_argument("--recipe", choices=["cpu", "full"], help="cpu (default) or full fine-tuning (GPU)")
    parser.add_argument("--weights", help="VGG16 weights: hed (default, offline), imagenet, or a file path")
    parser.add_argument("--training-json", help="JSON object of TrainingConfig overrides")
    parser.add_argument("--quick", action="store_true", help="a few epochs only: a smoke run, not a model")
    parser.add_argument("--beam-arg", action="append", help="Beam pipeline argument (repeatable)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radassist", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX/Beam/TensorFlow logs")
    areas = parser.add_subparsers(dest="area", required=True)
    pipeline = areas.add_parser("pipeline", help="the TFX training pipeline").add_subparsers(dest="action",
                                                                                               required=True)
    run = pipeline.add_parser("run", help="run locally (LocalDagRunner, SQLite ML Metadata)")
    run.add_argument("--data", help="data root with train/valid/test/<class>/ (default: $RADASSIST_DATA_DIR, "
                                    "./data/chest-ct, else the bundled sample)")
    run.add_argument("--output", help="output directory (default: $RADASSIST_OUTPUT_DIR or ./outputs)")
    run.add_argument("--model-base", help="where blessed models are pushed (default: <output>/models)")
    run.add_argument("--accuracy-floor", type=float, help=f"blessing floor (default {configs.ACCURACY_FLOOR})")
    _add_training_flags(run)
    run.set_defaults(func=cmd_pipeline_run)

    compile_ = pipeline.add_parser("compile", help="compile for Kubeflow Pipelines (KFP v2), optionally submit")
    compile_.add_argument("--output", default="radassist_pipeline.json")
    compile_.add_argument("--image", default=configs.KFP_IMAGE, help="container image built from Dockerfile.train")
    compile_.add_argument("--pipeline-root", default=configs.KFP_PIPELINE_ROOT)
    compile_.add_argument("--data", default="s3://radassist-data/chest-ct")
    compile_.add_argument("--model-base", default="s3://radassist-models")
    compile_.add_argument("--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI",
                                                                          "http://mlflow.radassist:5000"))
    compile_.add_argument("--submit", metavar="HOST", help="KFP API host to create a run on")
    compile_.add_argument("--schedule", metavar="CRON", help="with --submit: a recurring run (6-field cron)")
    _add_training_flags(compile_)
    compile_.set_defaults(func=cmd_pipeline_compile)

    serve = areas.add_parser("serve", help="serve models over TF Serving's gRPC and REST APIs")
    serve.add_argument("--model-base-path", default=os.environ.get("RADASSIST_MODEL_BASE")
                       or os.path.join(_repo_root(), configs.OUTPUT_SUBDIR, "models"),
                       help="folder or s3:// URI holding <model name>/<integer version>/ SavedModels")
    serve.add_argument("--model-name", action="append", help="model to serve (repeatable; default radassist)")
    serve.add_argument("--grpc-port", type=int, default=int(os.environ.get("RADASSIST_GRPC_PORT", 8500)))
    serve.add_argument("--rest-port", type=int, default=int(os.environ.get("RADASSIST_REST_PORT", 8501)))
    serve.add_argument("--host", default=os.environ.get("RADASSIST_SERVE_HOST", "127.0.0.1"),
                       help="address to bind (0.0.0.0 in a cluster, with --tls-* and a token)")
    serve.add_argument("--tls-cert", default=os.environ.get("RADASSIST_SERVE_TLS_CERT"),
                       help="PEM certificate: both APIs over TLS (with --tls-key)")
    serve.add_argument("--tls-key", default=os.environ.get("RADASSIST_SERVE_TLS_KEY"))
    serve.add_argument("--tls-client-ca", default=os.environ.get("RADASSIST_SERVE_TLS_CLIENT_CA"),
                       help="PEM CA: mutual TLS, only clients with a certificate it signed may connect")
    serve.add_argument("--token-file", default=os.environ.get("RADASSIST_SERVE_TOKEN_FILE"),
                       help="file holding the bearer token every gRPC and /v1 REST call must carry")
    serve.add_argument("--max-request-elements", type=int, default=256,
                       help="images (tensor elements) one request may carry")
    serve.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024,
                       help="largest gRPC message or REST body")
    serve.add_argument("--latest-versions", type=int, default=1, help="serve the N latest versions")
    serve.add_argument("--pin-version", type=int, action="append", help="serve exactly these versions")
    serve.add_argument("--enable-batching", action=argparse.BooleanOptionalAction, default=True)
    serve.add_argument("--max-batch-size", type=int, default=32)
    serve.add_argument("--batch-timeout-micros", type=int, default=5000)
    serve.add_argument("--file-system-poll-wait-seconds", type=float, default=2.0)
    serve.set_defaults(func=cmd_serve)

    users = areas.add_parser("users", help="portal accounts").add_subparsers(dest="action", required=True)
    create = users.add_parser("create", help="create an admin, doctor or patient")
    create.add_argument("--role", choices=["admin", "doctor", "patient"], required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--doctor", help="the patient's doctor (email)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(func=cmd_users_create)
    users.add_parser("list", help="list accounts").set_defaults(func=cmd_users_list)

    portal = areas.add_parser("portal", help="run the portal under gunicorn")
    portal.add_argument("--host", default=os.environ.get("RADASSIST_PORTAL_HOST", "127.0.0.1"))
    portal.add_argument("--port", type=int, default=int(os.environ.get("RADASSIST_PORTAL_PORT", 8000)))
    portal.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    portal.add_argument("--report-workers", type=int, default=int(os.environ.get("RADASSIST_REPORT_WORKERS", 1)),
                        help="report workers to start beside gunicorn (0 when they run elsewhere)")
    portal.set_defaults(func=cmd_portal)
    areas.add_parser("migrate", help="bring the portal database to the newest schema").set_defaults(
        func=cmd_migrate)
    worker = areas.add_parser("worker", help="run a report worker (analysis jobs -> model server -> reports)")
    worker.add_argument("--name", help="stable worker name: a restarted worker takes back the jobs its "
                                       "predecessor of the same name held (default <host>-<pid>)")
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if getattr(args, "area", None) == "serve" and not args.model_name:
        args.model_name = [configs.MODEL_NAME]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
