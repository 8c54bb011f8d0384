"""``radassist``: one command for the three parts. Each part owns its commands (pipelines/cli.py, serving/cli.py,
portal/cli.py); this dispatcher only collects them and sets up logging.

Quiet by default: the pipeline's commands run in a child process whose standard error passes through
radassist/quiet.py, which drops the TensorFlow/absl/Beam chatter (CUDA probes on machines without a GPU, C++ start-up
lines no Python setting reaches) and keeps progress bars, warnings and errors. ``--verbose`` shows everything.
"""

import argparse
import importlib
import logging
import os
import sys

# TFX's Transform and TFMA need Keras 2 (tf-keras): chosen here, before anything imports TensorFlow; an explicit
# setting wins. (The Dockerfiles and the Makefile set it too, for processes that do not start here.)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from radassist import quiet  # noqa: E402 - after the Keras choice

CHILD_MARK = "RADASSIST_QUIET_CHILD"  # set in the filtered child's environment: the child runs the command itself
# Each part's command module, the dependency group it needs and the commands it registers.
PARTS = (("pipelines.cli", "train", ("pipeline", "monitor", "retrain", "data")), ("serving.cli", "serve", ("serve",)),
         ("portal.cli", "portal", ("portal", "worker", "users", "migrate", "feedback")))


def _part(module_name: str):
    """A part's command module, or None when its dependency group is not installed."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in ("pipelines", "serving", "portal", "radassist"):
            raise  # our own code is broken: not a missing install
        return None


def _not_installed(extra: str):
    def fail(args) -> int:
        raise SystemExit(f"radassist {args.area}: this install lacks the {extra!r} dependencies: "
                         f"pip install 'radassist[{extra}]'")
    return fail


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radassist", description="RadAssist: the training pipeline, the model "
                                     "server and the portal (`radassist <command> --help` for each).")
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX/Beam/TensorFlow logs")
    areas = parser.add_subparsers(dest="area", required=True)
    for module_name, extra, commands in PARTS:
        module = _part(module_name)
        if module is not None:
            module.add_commands(areas)
            continue
        for command in commands:
            missing = areas.add_parser(command, help=f"(needs radassist[{extra}])", add_help=False)
            missing.add_argument("rest", nargs=argparse.REMAINDER)
            missing.set_defaults(func=_not_installed(extra))
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        quiet.quiet_python_logging()


def main(argv: list[str] | None = None) -> int:
    """Runs ``argv`` (default: the command line). From the command line, the commands that load TensorFlow run in a
    filtered child unless --verbose; called with ``argv`` (tests, scripts), a command runs in this process."""
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    command = argv[1:] if verbose else argv
    portal_cli = _part("portal.cli")
    if command and portal_cli and command[0] in portal_cli.APP_COMMANDS:  # Flask commands parse their arguments
        _configure_logging(verbose)
        return portal_cli.run_app_command(command)
    args = make_parser().parse_args(argv)
    filtered = from_command_line and getattr(args, "filter_stderr", False) and not args.verbose
    if filtered and not os.environ.get(CHILD_MARK):
        return quiet.run_filtered([sys.executable, "-m", "radassist.cli", *argv], {CHILD_MARK: "1"})
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except ModuleNotFoundError as error:
        extra = next((extra for _, extra, commands in PARTS if args.area in commands), "all")
        if not error.name or error.name.split(".")[0] in ("pipelines", "serving", "portal", "radassist",
                                                           "components"):
            raise
        raise SystemExit(f"radassist {args.area}: {error.name} is not installed: pip install "
                         f"'radassist[{extra}]'") from error


if __name__ == "__main__":
    sys.exit(main())
