"""The README's performance tables, rendered from the JSON records that ``bench`` writes.

A cell is the median over the records given, followed by (min–max) wherever the records
differ by more than ``SPREAD`` of the median, so a noisy machine's spread shows where it
matters and nowhere else. Ratios (speed-ups, gains) are taken within each record, then
summarized. ``python -m lmreport bench --summarize FILE...`` prints the tables of some
records; ``bench --update-readme`` re-renders every README block between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` from the files its first line names,
and a test checks that no block differs from what its files give.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from .files import write_text
from .grid import GRID_RUNS_PER_DEPTH

SPREAD = 0.05
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ISSUE_GOALS = {1: "≥ 1.4× / ≥ 2×", 3: "≥ 1.2× / ≥ 2×"}  # issue #5, paper models on CPU: step / test-eval
SHARE_LABELS = {"lstm_forward": "LSTM fwd", "lstm_backward": "LSTM bwd", "matmul": "matmul (decoder)",
                "softmax_ce": "softmax/CE", "dropout_rng": "dropout-mask RNG", "other": "other",
                "idle": "GPU idle"}
EVAL_LABELS = {"lstm_forward": "LSTM", "matmul": "matmul", "softmax_ce": "softmax/CE", "other": "other",
               "idle": "GPU idle"}
KINDS = {"results": "a bench", "throughput": "--jobs", "concurrent": "--concurrent"}


def cell(values, fmt: str, unit: str = "") -> str:
    """Median of ``values`` formatted with ``fmt``, and their range where it is wide."""
    med = statistics.median(values)
    text = f"{med:{fmt}}{unit}"
    lo, hi = min(values), max(values)
    if med and (hi - lo) / abs(med) > SPREAD:
        text += f" ({lo:{fmt}}–{hi:{fmt}})"
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _power_of_ten(x: float) -> str:
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    digits = str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa} × 10{digits}"


def _rows(record: dict, kind: str, **match) -> list[dict]:
    return [r for r in record[kind] if all(r[k] == v for k, v in match.items())]


def _one(records: dict[str, dict], field: str):
    """The value of ``field`` that every record shares (median over unlike runs means nothing)."""
    values = {path: record.get(field) for path, record in records.items()}
    if len({json.dumps(v) for v in values.values()}) > 1:
        raise ValueError(f"the records differ in {field} (" + ", ".join(f"{p}: {v}" for p, v in values.items())
                         + f"); summarize records of one {field}")
    return next(iter(values.values()))


def _same(records: dict[str, dict], *fields: str) -> None:
    for field in fields:
        _one(records, field)


def _layout(records: dict[str, dict], kind: str, keys: tuple[str, ...]) -> list[tuple]:
    """The (depth, ...) rows every record holds, checked to be the same in each."""
    layouts = {path: sorted({tuple(r[k] for k in keys) for r in record[kind]}) for path, record in records.items()}
    first_path, first = next(iter(layouts.items()))
    for path, layout in layouts.items():
        if layout != first:
            raise ValueError(f"{path} measured {', '.join(keys)} = {layout}, but {first_path} measured {first}; "
                             f"summarize records of the same shape")
    return first


def model_tables(records: dict[str, dict]) -> list[str]:
    """Speed per depth; with ``--compare`` the speed-ups; with ``--breakdown`` the shares."""
    profile, device = _one(records, "profile"), str(_one(records, "device"))
    _same(records, "device_name", "tf32")
    recs = list(records.values())
    depths = [d for (d,) in _layout(records, "results", ("layers",))]
    by_depth = {d: [_rows(rec, "results", layers=d)[0] for rec in recs] for d in depths}
    epochs = {r["epochs"] for rs in by_depth.values() for r in rs}
    if len(epochs) > 1:
        raise ValueError(f"the records project runs of different lengths ({sorted(epochs)} epochs); "
                         f"summarize records of one profile setting")
    epochs = epochs.pop()
    rows = [[str(d), cell([r["train_tokens_per_s"] for r in rs], ",.0f"), cell([r["step_ms"] for r in rs], ",.0f"),
             cell([r["optimizer_step_ms"] for r in rs], ".1f"), cell([r["test_eval_tokens_per_s"] for r in rs], ",.0f"),
             cell([r["projected_epoch_s"] for r in rs], ",.0f", " s"),
             cell([r["projected_run_hours"] for r in rs], ",.1f", " h"),
             cell([r["projected_grid_hours_this_depth"] for r in rs], ",.0f", " h")] for d, rs in by_depth.items()]
    totals = [sum(r["projected_grid_hours_this_depth"] for r in rec["results"]) for rec in recs]
    out = [_table(["layers", "train tokens/s", "step ms", "optimizer ms", "batch-1 test tokens/s",
                   f"{profile} epoch (projected)", f"one {epochs}-epoch {profile} run",
                   f"{GRID_RUNS_PER_DEPTH} runs of this depth"], rows)
           + f"\n\nThe {GRID_RUNS_PER_DEPTH * len(depths)}-run `{profile}` grid of depths "
           + ", ".join(map(str, depths)) + ", one run at a time: " + cell(totals, ",.0f", " h")
           + (" (the median of the records' totals)." if len(recs) > 1 else ".")]
    if all("speedup_train_step_vs_reference" in r for rs in by_depth.values() for r in rs):
        goals = device == "cpu" and profile == "paper"  # what issue #5 set them for
        rows = [[str(d)] + [cell([r[f"speedup_{k}_vs_reference"] for r in rs], ".2f", "×")
                            for k in ("train_step", "optimizer_step", "test_eval")]
                + [cell([r["speedup_train_step_vs_reference_tuned_allocator"] for r in rs], ".2f", "×")]
                + ([ISSUE_GOALS.get(d, "—")] if goals else []) for d, rs in by_depth.items()]
        out.append(_table(["layers", "step speed-up", "optimizer speed-up", "test-eval speed-up",
                           "step speed-up, both on the tuned allocator"]
                          + (["issue #5 goal (step / eval)"] if goals else []), rows))
    if all("step_kernel_shares" in r for rs in by_depth.values() for r in rs):
        on_gpu = device.startswith("cuda")
        step_groups = [g for g in SHARE_LABELS if g != "idle" or on_gpu]
        eval_groups = [g for g in EVAL_LABELS if g != "idle" or on_gpu]
        ceiling = all("ceiling_train_step_vs_reference" in r for rs in by_depth.values() for r in rs)

        def shares(rs, kind, group):
            return cell([100 * r[f"{kind}_kernel_shares"].get(group, 0.0) for r in rs], ".1f", "%")

        rows = [[str(d)] + [shares(rs, "step", g) for g in step_groups] + [shares(rs, "eval", g) for g in eval_groups]
                + ([cell([r["ceiling_train_step_vs_reference"] for r in rs], ".2f", "×") + " / "
                    + cell([r["ceiling_test_eval_vs_reference"] for r in rs], ".2f", "×")] if ceiling else [])
                for d, rs in by_depth.items()]
        header = (["layers"] + [("step: " if i == 0 else "") + SHARE_LABELS[g] for i, g in enumerate(step_groups)]
                  + [("test-eval: " if i == 0 else "") + EVAL_LABELS[g] for i, g in enumerate(eval_groups)]
                  + (["most any change keeping the kernels could reach vs reference: step / eval"] if ceiling else []))
        out.append(_table(header, rows))
    return out


def throughput_table(records: dict[str, dict]) -> str:
    """Aggregate training tokens/s of N processes with cores/N threads (``--jobs``)."""
    _same(records, "device", "device_name", "profile")
    layout = _layout(records, "throughput", ("layers", "jobs", "threads_per_job"))
    depths = sorted({d for d, _, _ in layout})
    columns = sorted({(j, t) for _, j, t in layout})
    header = ["layers"] + [f"{j} job{'s' * (j > 1)} × {t} thread{'s' * (t > 1)}" for j, t in columns]
    rows = []
    for d in depths:
        rate = {j: [_rows(rec, "throughput", layers=d, jobs=j)[0]["aggregate_train_tokens_per_s"]
                    for rec in records.values()] for j, _ in columns}
        base = columns[0][0]
        rows.append([str(d)] + [cell(rate[j], ",.0f") + ("" if j == base else
                                f" ({cell([a / b for a, b in zip(rate[j], rate[base])], '.2f', '×')})")
                                for j, _ in columns])
    return _table(header, rows)


def concurrency_table(records: dict[str, dict]) -> str:
    """Real epochs alone and N at once (``--concurrent``), one row per depth and N."""
    profile = _one(records, "profile")
    _same(records, "device", "device_name")
    layout = _layout(records, "concurrent", ("layers", "runs_at_once", "threads_per_run"))
    depths = sorted({d for d, _, _ in layout})
    rows, totals = [], {}
    for d, k, threads in layout:
        at_k = [_rows(rec, "concurrent", layers=d, runs_at_once=k)[0] for rec in records.values()]
        alone = [_rows(rec, "concurrent", layers=d, runs_at_once=1) for rec in records.values()]
        gain = ("—" if k == 1 or not all(alone) else
                cell([r["aggregate_epochs_per_hour"] / a[0]["aggregate_epochs_per_hour"] for r, a in zip(at_k, alone)],
                     ".2f", "×"))
        same = ("(the reference)" if k == 1 else "yes" if all(r["identical_to_alone"] for r in at_k) else
                f"no, up to {_power_of_ten(max(r['max_relative_difference_vs_alone'] for r in at_k))}")
        cores = [r["max_relative_difference_vs_all_cores"] for r in at_k]
        rows.append([str(d), str(k), str(threads), cell([r["epoch_s"] for r in at_k], ".1f"), gain, same,
                     "—" if k == 1 or None in cores else _power_of_ten(max(cores)),
                     cell([r["projected_grid_hours_this_depth"] for r in at_k], ".2f", " h")])
    for k in sorted({k for _, k, _ in layout}):
        totals[k] = [sum(r["projected_grid_hours_this_depth"] for r in _rows(rec, "concurrent", runs_at_once=k))
                     for rec in records.values()]
    table = _table(["layers", "runs at once", "threads each", "epoch s", "aggregate gain", "same numbers as alone",
                    "largest difference vs the run with every core", f"{GRID_RUNS_PER_DEPTH} runs of this depth"], rows)
    grid = ", ".join(f"{cell(v, ',.1f', ' h')} running {k} at a time" for k, v in totals.items())
    return table + (f"\n\nThe {GRID_RUNS_PER_DEPTH * len(depths)}-run `{profile}` grid of depths "
                    f"{', '.join(map(str, depths))}: {grid}.")


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ValueError(f"{path}: no such file (give JSON records that bench wrote)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON bench record ({err})") from None
    kinds = [k for k in KINDS if isinstance(record, dict) and record.get(k)]
    if len(kinds) != 1:
        raise ValueError(f"{path}: not a record that --summarize renders (one with results, throughput or "
                         f"concurrent rows; --tf32-effect and HVP records have no table)")
    if record.get("complete") is False:
        raise ValueError(f"{path}: an incomplete record (its bench was stopped); summarize finished records")
    for field in ("profile", "device"):
        if field not in record:
            raise ValueError(f"{path}: no {field} field (written by an older bench); summarize newer records")
    if kinds == ["results"] and "epochs" not in record["results"][0]:
        raise ValueError(f"{path}: no epochs in its rows (written by an older bench); summarize newer records")
    return record


def summarize(paths: list[str | Path], root: Path | None = None) -> str:
    """The block for these records: a line naming them, then their tables."""
    root = root or Path.cwd()
    records = {str(p): _read(root / p) for p in paths}
    kinds = {path: next(k for k in KINDS if record.get(k)) for path, record in records.items()}
    if len(set(kinds.values())) > 1:
        raise ValueError("summarize records of one kind: " + ", ".join(f"{p} is {KINDS[k]} record"
                                                                        for p, k in kinds.items()))
    kind = next(iter(kinds.values()))
    tables = (model_tables(records) if kind == "results" else
              [throughput_table(records)] if kind == "throughput" else [concurrency_table(records)])
    n = len(records)
    head = (f"<sub>Rendered by `python -m lmreport bench --summarize {' '.join(map(str, paths))}`"
            + (f": the median of {n} records, with (min–max) where they differ by more than {SPREAD:.0%}"
               if n > 1 else "") + ".</sub>")
    return "\n\n".join([head, *tables])


def summarize_groups(paths: list[str | Path], root: Path | None = None) -> str:
    """What ``bench --summarize`` prints: the records in as few blocks as combine (records of
    one kind, device, profile and shape), then the files that render no table and why.
    Only when nothing renders is it an error, so a glob over results/bench/ just works."""
    root = root or Path.cwd()
    groups: list[list[str]] = []
    skipped: list[str] = []
    for path in map(str, paths):
        try:
            _read(root / path)
        except ValueError as err:
            skipped.append(str(err))
            continue
        for group in groups:
            try:
                summarize(group + [path], root)
            except ValueError:
                continue
            group.append(path)
            break
        else:
            groups.append([path])
    if not groups:
        raise ValueError("; ".join(skipped))
    blocks = [summarize(group, root) for group in groups]
    if skipped:
        blocks.append("Not rendered:\n" + "\n".join(f"- {reason}" for reason in skipped))
    return "\n\n".join(blocks)


def update_readme(readme: Path, check: bool = False) -> bool:
    """Re-render every bench block of ``readme`` from the files it names; whether any changed.
    ``check``: only compare, write nothing."""
    text = readme.read_text(encoding="utf-8")

    def render(match: re.Match) -> str:
        files = re.search(r"--summarize ([^`]+)`", match.group(1))
        if not files:
            raise ValueError(f"{readme}: a bench block does not name its records (--summarize FILE...)")
        return f"{START}\n{summarize(files.group(1).split(), readme.parent)}\n{END}"

    new = re.sub(re.escape(START) + r"\n(.*?)\n" + re.escape(END), render, text, flags=re.S)
    if new != text and not check:
        write_text(readme, new)
    return new != text
