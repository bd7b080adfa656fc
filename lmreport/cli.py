"""Command line: ``python -m lmreport {train,bench,profiles} ...``.

The ``train`` flags are generated from the fields of ``RunConfig`` (``--emsize``,
``--dropouth``, ``--c-mode`` ...), with the field's comment as help, so the CLI cannot
drift from the config. Bad input exits with status 2 and one line on stderr, before
anything is written.
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import MISSING, fields

from .config import OPTIMIZERS, PROFILES, RUNTIME_FIELDS, RunConfig, make_config
from .data import DataError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _field_help() -> dict[str, str]:
    """The trailing comment of each RunConfig field, used as its --help text."""
    source = inspect.getsource(RunConfig)
    return dict(re.findall(r"^\s{4}(\w+):[^#\n]*#\s*(.+)$", source, flags=re.M))


def _float_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not two comma-separated numbers, e.g. 0.9,0.999")
    return float(parts[0]), float(parts[1])


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    helps = _field_help()
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = f"{helps.get(f.name, '')} [default: {default}]"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind == "list[int]":
            parser.add_argument(flag, type=int, nargs="*", metavar="EPOCH", **kwargs)
        elif kind.startswith("tuple"):
            parser.add_argument(flag, type=_float_pair, metavar="B1,B2", **kwargs)
        else:
            base = kind.split("|")[0].strip()
            typ = {"int": int, "float": float}.get(base, str)
            extra = {"choices": OPTIMIZERS} if f.name == "optimizer" else {}
            extra = {"choices": list(PROFILES)} if f.name == "profile" else extra
            parser.add_argument(flag, type=typ, **extra, **kwargs)
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR with its own config.json "
                             f"(only {', '.join(RUNTIME_FIELDS)} may be changed)")


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
    if args.resume:
        from pathlib import Path
        path = Path(args.resume) / "config.json"
        if not path.is_file():
            raise ValueError(f"--resume {args.resume}: no config.json there (is it a run directory?)")
        science = sorted(k for k in given if k not in RUNTIME_FIELDS)
        if science:
            raise ValueError(f"--resume takes the run's own settings; drop "
                             f"{', '.join('--' + k.replace('_', '-') for k in science)}")
        config = RunConfig.from_json(path)
        data = config.to_dict()
        data.update(given, run_dir=str(Path(args.resume)))
        return RunConfig.from_dict(data).resolved()
    return make_config(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmreport", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_train = sub.add_parser("train", help="train one run (resumes an unfinished run directory)")
    _add_config_flags(p_train)

    p_bench = sub.add_parser("bench", help="speed of the paper-size models on this machine")
    p_bench.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    p_bench.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    p_bench.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p_bench.add_argument("--eval-tokens", type=int, default=5600,
                         help="test tokens evaluated at batch size 1")
    p_bench.add_argument("--device", default="auto")
    p_bench.add_argument("--threads", type=int, default=None)
    p_bench.add_argument("--out", default=None, help="JSON file (default: results/bench/...)")

    sub.add_parser("profiles", help="print the run profiles and what they change")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from .train import train
            config = _config_from_args(args)
            run_dir = train(config)
            print(run_dir)
        elif args.command == "bench":
            from .bench import run_bench
            run_bench(layers=args.layers, steps=args.steps, warmup=args.warmup,
                      eval_tokens=args.eval_tokens, device=args.device, threads=args.threads,
                      out=args.out)
        elif args.command == "profiles":
            for name, profile in PROFILES.items():
                changes = ", ".join(f"{k}={v}" for k, v in profile.overrides.items()) or "none"
                lrs = ", ".join(f"{k} lr={v}" for k, v in profile.lr.items())
                print(f"{name}: {profile.description}\n  changes: {changes}"
                      + (f"; {lrs}" if lrs else ""))
    except (ValueError, DataError) as err:
        print(f"lmreport {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
