"""The README's performance tables, rendered from the JSON records that ``bench`` writes.

A cell is the median over the records given, followed by (min–max) wherever the records
differ by more than ``SPREAD`` of the median, so a noisy machine's spread shows where it
matters and nowhere else. ``python -m lmreport bench --summarize FILE...`` prints the
tables of some records; ``bench --update-readme`` re-renders every README block between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` from the files its first line names,
and a test checks that no block differs from what its files give.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from .grid import STUDY_SEEDS, STUDY_VARIANTS

SPREAD = 0.05
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
GRID_RUNS_PER_DEPTH = len(STUDY_VARIANTS) * len(STUDY_SEEDS)
ISSUE_GOALS = {1: "≥ 1.4× / ≥ 2×", 3: "≥ 1.2× / ≥ 2×"}  # issue #5: step / test-eval vs reference
SHARE_LABELS = {"lstm_forward": "LSTM fwd", "lstm_backward": "LSTM bwd", "matmul": "matmul (decoder)",
                "softmax_ce": "softmax/CE", "dropout_rng": "dropout-mask RNG", "other": "other",
                "idle": "GPU idle"}
EVAL_GROUPS = ("lstm_forward", "matmul", "softmax_ce", "other")


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
    mantissa, exponent = f"{x:.1e}".split("e")
    digits = str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa} × 10{digits}"


def _by_depth(records: list[dict], key: str) -> dict[int, list[dict]]:
    rows: dict[int, list[dict]] = {}
    for record in records:
        for row in record.get(key, []):
            rows.setdefault(row["layers"], []).append(row)
    return dict(sorted(rows.items()))


def _one(records: list[dict], field: str):
    values = {str(r.get(field)) for r in records}
    if len(values) > 1:
        raise ValueError(f"the records mix {field}s ({', '.join(sorted(values))}): summarize one {field} at a time")
    return records[0].get(field)


def model_tables(records: list[dict]) -> list[str]:
    """Speed per depth; with ``--compare`` records the speed-ups; with ``--breakdown`` the shares."""
    profile, on_gpu = _one(records, "profile"), str(_one(records, "device")).startswith("cuda")
    depth = _by_depth(records, "results")
    epochs = next(iter(depth.values()))[0]["epochs"]
    rows = [[str(n), cell([r["train_tokens_per_s"] for r in rs], ",.0f"), cell([r["step_ms"] for r in rs], ",.0f"),
             cell([r["optimizer_step_ms"] for r in rs], ".1f"), cell([r["test_eval_tokens_per_s"] for r in rs], ",.0f"),
             cell([r["projected_epoch_s"] for r in rs], ",.0f", " s"),
             cell([r["projected_run_hours"] for r in rs], ",.1f", " h"),
             cell([r["projected_grid_hours_this_depth"] for r in rs], ",.0f", " h")] for n, rs in depth.items()]
    out = [_table(["layers", "train tokens/s", "step ms", "optimizer ms", "batch-1 test tokens/s",
                   f"{profile} epoch (projected)", f"one {epochs}-epoch {profile} run",
                   f"{GRID_RUNS_PER_DEPTH} runs of this depth"], rows)
           + f"\n\nThe {GRID_RUNS_PER_DEPTH * len(depth)}-run `{profile}` grid, one run at a time: "
           + cell([sum(r["projected_grid_hours_this_depth"] for r in rec["results"]) for rec in records], ",.0f", " h")
           + "."]
    if all("speedup_train_step_vs_reference" in r for rs in depth.values() for r in rs):
        rows = [[str(n)] + [cell([r[f"speedup_{k}_vs_reference"] for r in rs], ".2f", "×")
                            for k in ("train_step", "optimizer_step", "test_eval")]
                + [cell([r["speedup_train_step_vs_reference_tuned_allocator"] for r in rs], ".2f", "×"),
                   ISSUE_GOALS.get(n, "—")] for n, rs in depth.items()]
        out.append(_table(["layers", "step speed-up", "optimizer speed-up", "test-eval speed-up",
                           "step speed-up, both on the tuned allocator", "issue #5 goal (step / eval)"], rows))
    if all("step_kernel_shares" in r for rs in depth.values() for r in rs):
        step_groups = [g for g in SHARE_LABELS if g != "idle" or on_gpu]
        eval_groups = [*EVAL_GROUPS, *(["idle"] if on_gpu else [])]

        def shares(rs, kind, group):
            return cell([100 * r[f"{kind}_kernel_shares"].get(group, 0.0) for r in rs], ".1f", "%")

        rows = [[str(n)] + [shares(rs, "step", g) for g in step_groups] + [shares(rs, "eval", g) for g in eval_groups]
                + [cell([r["ceiling_train_step_vs_reference"] for r in rs], ".2f", "×") + " / "
                   + cell([r["ceiling_test_eval_vs_reference"] for r in rs], ".2f", "×")]
                for n, rs in depth.items()]
        header = (["layers"] + [("step: " if i == 0 else "") + SHARE_LABELS[g] for i, g in enumerate(step_groups)]
                  + [("test-eval: " if i == 0 else "") + SHARE_LABELS[g].replace(" (decoder)", "").replace("LSTM fwd", "LSTM")
                     for i, g in enumerate(eval_groups)]
                  + ["most any change keeping the kernels could reach vs reference: step / eval"])
        out.append(_table(header, rows))
    return out


def throughput_table(records: list[dict]) -> str:
    """Aggregate training tokens/s of N processes with cores/N threads (``--jobs``)."""
    depth = _by_depth(records, "throughput")
    jobs = sorted({r["jobs"] for rs in depth.values() for r in rs})
    threads = {r["jobs"]: r["threads_per_job"] for rs in depth.values() for r in rs}
    header = ["layers"] + [f"{j} job{'s' * (j > 1)} × {threads[j]} thread{'s' * (threads[j] > 1)}" for j in jobs]
    rows = []
    for n, rs in depth.items():
        rate = {j: [r["aggregate_train_tokens_per_s"] for r in rs if r["jobs"] == j] for j in jobs}
        row = [str(n)]
        for j in jobs:
            text = cell(rate[j], ",.0f")
            if j != jobs[0]:
                text += f" ({cell([a / b for a, b in zip(rate[j], rate[jobs[0]])], '.2f', '×')})"
            row.append(text)
        rows.append(row)
    return _table(header, rows)


def concurrency_table(records: list[dict]) -> str:
    """Real epochs alone and N at once (``--concurrent``), one row per depth and N."""
    profile = _one(records, "profile")
    depth = _by_depth(records, "concurrent")
    rows, totals = [], {}
    for n, rs in depth.items():
        alone = [r for r in rs if r["runs_at_once"] == 1]
        for k in sorted({r["runs_at_once"] for r in rs}):
            at_k = [r for r in rs if r["runs_at_once"] == k]
            cores = [r["max_relative_difference_vs_all_cores"] for r in at_k]
            totals.setdefault(k, []).append([r["projected_grid_hours_this_depth"] for r in at_k])
            rows.append([str(n), str(k), str(at_k[0]["threads_per_run"]), cell([r["epoch_s"] for r in at_k], ".1f"),
                         cell([k * a["epoch_s"] / r["epoch_s"] for a, r in zip(alone, at_k)], ".2f", "×")
                         if alone and k > 1 else "—",
                         "(the reference)" if k == 1 else "yes" if all(r["identical_to_alone"] for r in at_k)
                         else f"no, up to {_power_of_ten(max(r['max_relative_difference_vs_alone'] for r in at_k))}",
                         "—" if k == 1 or None in cores else _power_of_ten(max(cores)),
                         cell([r["projected_grid_hours_this_depth"] for r in at_k], ".2f", " h")])
    table = _table(["layers", "runs at once", "threads each", "epoch s", "aggregate gain", "same numbers as alone",
                    "largest difference vs the run with every core", f"{GRID_RUNS_PER_DEPTH} runs of this depth"], rows)
    grid = ", ".join(f"{cell([sum(h) for h in zip(*v)], ',.1f', ' h')} running {k} at a time"
                     for k, v in sorted(totals.items()))
    return table + f"\n\nThe {GRID_RUNS_PER_DEPTH * len(depth)}-run `{profile}` grid: {grid}."


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (give JSON records that bench wrote)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON bench record ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a bench record (a JSON object with results, throughput or concurrent)")
    return record


def summarize(paths: list[str | Path], root: Path | None = None) -> str:
    """The block for these records: a line naming them, then their tables."""
    root = root or Path.cwd()
    records = [_read(root / p) for p in paths]
    kinds = {("results" if "results" in r else "throughput" if "throughput" in r else
              "concurrent" if "concurrent" in r else "other") for r in records}
    if len(kinds) != 1 or kinds == {"other"}:
        raise ValueError(f"{' '.join(map(str, paths))}: summarize records of one kind (a bench, --jobs or "
                         f"--concurrent), not {', '.join(sorted(kinds))}")
    if any(r.get("complete") is False for r in records):
        raise ValueError("a record is incomplete (the bench was stopped); summarize finished records")
    kind = kinds.pop()
    tables = (model_tables(records) if kind == "results" else
              [throughput_table(records)] if kind == "throughput" else [concurrency_table(records)])
    n = len(records)
    head = (f"<sub>Rendered by `python -m lmreport bench --summarize {' '.join(map(str, paths))}`"
            + (f": the median of {n} records, with (min–max) where they differ by more than {SPREAD:.0%}"
               if n > 1 else "") + ".</sub>")
    return "\n\n".join([head, *tables])


def update_readme(readme: Path, check: bool = False) -> bool:
    """Re-render every bench block of ``readme`` from the files it names; whether any changed.
    ``check``: only compare, write nothing."""
    text = readme.read_text()

    def render(match: re.Match) -> str:
        files = re.search(r"--summarize ([^`]+)`", match.group(1))
        if not files:
            raise ValueError(f"{readme}: a bench block does not name its records (--summarize FILE...)")
        return f"{START}\n{summarize(files.group(1).split(), readme.parent)}\n{END}"

    new = re.sub(re.escape(START) + r"\n(.*?)\n" + re.escape(END), render, text, flags=re.S)
    if new != text and not check:
        readme.write_text(new)
    return new != text
