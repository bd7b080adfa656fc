"""One dataclass per run, and the profiles that fill it.

``RunConfig`` holds every setting of a training run. The CLI flags and the papermill
parameters of notebook 03 map one-to-one onto its fields, and every run directory keeps
it as ``config.json`` beside its metrics, so each number traces back to its settings.
Model hyper-parameters keep the AWD-LSTM names; landscape-modification terms follow the
thesis (``f``, ``eps_lm``, ``c_mode``).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .optim import C_RESETS, NOISE_FUNCTIONS, parse_c_mode
from .regularize import EMBED_PADDINGS, WDROP_MODES

OPTIMIZERS = ("adabelief", "adabelief-lm", "adam", "adam-lm", "sgd", "sgd-lm")
# chunked: ~8k-token chunks, float64 sum (faster, and nearer the exact value than published's float32 sum);
# published: the published loop's bptt-row windows, criterion arithmetic and float32 sum
EVAL_MODES = ("chunked", "published")
DEVICES = r"auto|cpu|mps|cuda(:\d+)?"  # the device names a run accepts (a regular expression)

# Published learning rate and eps per optimizer and depth. AdaBelief: the study's
# Appendix B (= the AdaBelief authors' LSTM settings). Adam and SGD, for extra baselines:
# the learning rates of the AdaBelief authors' LSTM runs; their script never passed eps to
# Adam (its 1e-12 in the 1-layer run name went unused), so torch's default 1e-8 ran. Their
# SGD runs also switched to averaged SGD once the test loss stopped improving; `sgd` here
# is plain SGD with their learning rate, without that switch.
PAPER_LR_EPS = {
    "adabelief": {1: (1e-3, 1e-16), 2: (1e-2, 1e-12), 3: (1e-2, 1e-12)},
    "adam": {1: (1e-3, 1e-8), 2: (1e-2, 1e-8), 3: (1e-2, 1e-8)},
    "sgd": {1: (30.0, 0.0), 2: (30.0, 0.0), 3: (30.0, 0.0)},
}

PROFILES_NEEDING_PTB = ("paper", "cpu", "converged")  # their runs refuse other data (train.check_data)
# Position of the first "unilab" (PTB's last vocabulary id) in ptb.train.txt; tests/test_data.py
PTB_LAST_WORD_FIRST_TRAIN_INDEX = 929_453


def _as_recorded_before_new_fields(data: dict) -> dict:
    """Complete a config.json written before a field existed with what the code of that
    time did, not with today's default: its settings must still reproduce its numbers.

    embed_padding (added 2026-11-25): the earlier code trained every embedding row
    (``none``). A run whose training slice of PTB ends before the last word's first
    occurrence never feeds that word, where the two rules are the same arithmetic, so it
    reads as the default ``last`` (the committed cpu runs: the first 200k tokens). Only
    the profiles that insist on PTB can know where that word is."""
    if "embed_padding" not in data:
        cap = data.get("max_train_tokens")
        never_fed = (data.get("profile") in PROFILES_NEEDING_PTB and isinstance(cap, int)
                     and cap <= PTB_LAST_WORD_FIRST_TRAIN_INDEX)
        data = {**data, "embed_padding": "last" if never_fed else "none"}
    return data


# Fields that say where or how a run executes, not what it computes: they may differ
# when a run is resumed elsewhere (e.g. a Colab run continued on another machine).
RUNTIME_FIELDS = ("device", "threads", "run_dir", "data_dir", "progress", "save_best", "trace",
                  "fast_malloc", "deterministic")


@dataclass
class RunConfig:
    # --- what is trained
    profile: str = "paper"          # preset the defaults came from (see PROFILES)
    layers: int = 3                 # nlayers: LSTM layers (1, 2 or 3 in the study)
    optimizer: str = "adabelief"    # one of OPTIMIZERS; "-lm" adds landscape modification
    f: str | None = None            # LM noise function: x2, x, sqrt, cbrt (LM optimizers only)
    seed: int = 141                 # python, numpy and torch seed (study: 141, 6, 42)
    # --- model (AWD-LSTM names)
    emsize: int = 400               # embedding size = last layer's output (tied weights)
    nhid: int = 1150                # hidden units of the inner layers
    dropout: float = 0.4            # locked dropout on the last layer's output
    dropouth: float = 0.25          # locked dropout between layers
    dropouti: float = 0.4           # locked dropout on the embedded input
    dropoute: float = 0.1           # embedding (whole-word) dropout
    wdrop: float = 0.5              # DropConnect on each hidden-to-hidden matrix
    wdrop_mode: str = "frozen"      # frozen: published (W_hh never trains); trained: corrected
    embed_padding: str = "last"     # last: published (last word's input lookup gets no gradient); none
    alpha: float = 2.0              # AR weight (last layer's dropped output)
    beta: float = 1.0               # TAR weight (last layer's raw output)
    # --- optimisation
    lr: float | None = None         # None: the published value for this optimizer and depth
    eps: float | None = None        # None: likewise
    betas: tuple[float, float] = (0.9, 0.999)
    wdecay: float = 1.2e-6          # L2 weight decay, added to the gradient
    clip: float = 0.25              # max global gradient norm (0: no clipping)
    epochs: int = 200               # training epochs
    when: list[int] = field(default_factory=lambda: [100, 145])  # lr / 10 before these epochs
    batch_size: int = 20
    eval_batch_size: int = 10       # real validation split
    test_batch_size: int = 1        # test split, the published "valid" perplexity
    bptt: int = 70                  # mean BPTT length; also the published evaluation window
    eval_mode: str = "chunked"      # chunked: long chunks, float64 sum; published: bptt windows, float32 sum
    # --- landscape modification
    eps_lm: float = 1.0             # epsilon of 1/(f((U-c)_+) + eps_lm)
    c_mode: str = "running_min"     # running_min | zero | constant:<value>
    c_reset: str = "epoch"          # running minimum restarts every epoch, or never
    # --- data
    data_dir: str | None = None     # None: $LMREPORT_DATA_DIR, else data/ptb in the repo
    max_train_tokens: int | None = None  # train on the first N tokens only (None: all)
    max_eval_tokens: int | None = None   # evaluate on the first N valid/test tokens only
    # --- quirks of the published loop, kept so a seeded run replays it
    epoch_permutation: bool = True  # draw (and ignore) np.random.permutation(rows-2) per epoch
    # --- runtime
    device: str = "auto"            # auto: cuda, else mps, else cpu
    tf32: bool = False              # TF32 matmuls/RNNs on Ampere+ GPUs (published: off)
    deterministic: bool = True      # CUDA: reproducible kernels, bit-identical resume (off: free choice)
    threads: int | None = None      # torch CPU threads (None: torch's default)
    run_dir: str | None = None      # None: results/<profile>/runs/<run name>
    progress: bool = True           # tqdm bars
    save_best: bool = True          # keep the weights of the best-valid and best-test epochs
    trace: bool = False             # write per-batch seq_len, CE, U (and LM's c) to batches.csv
    fast_malloc: bool = True        # Linux: reuse freed memory (no page faults; same numbers)

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # JSON (config.json, papermill parameters) has no tuples
            self.betas = tuple(self.betas)
        if isinstance(self.when, tuple):  # and config.json stores when as a list
            self.when = list(self.when)

    @property
    def uses_lm(self) -> bool:
        return self.optimizer.endswith("-lm")

    @property
    def base_optimizer(self) -> str:
        return self.optimizer.removesuffix("-lm")

    @property
    def name(self) -> str:
        """Run name: depth, optimizer, f and seed, plus each setting the study's ablations
        vary (c_mode, c_reset, wdrop_mode, embed_padding, eval_mode) that is not at its
        default. Other overrides (a different wdecay, say) do not show: such a run needs its
        own run_dir, and a folder holding a different run is refused, naming the settings
        that differ."""
        parts = [f"{self.layers}layer", self.optimizer]
        if self.uses_lm:
            parts.append(self.f)
            if self.c_mode != "running_min":
                parts.append("c" + self.c_mode.replace(":", ""))
            if self.c_reset != "epoch":
                parts.append("cglobal")
        if self.wdrop_mode != "frozen":
            parts.append(f"whh-{self.wdrop_mode}")
        if self.embed_padding != "last":
            parts.append(f"pad-{self.embed_padding}")
        if self.eval_mode != "chunked":
            parts.append(f"eval-{self.eval_mode}")
        return "-".join(parts) + f"-seed{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object of settings, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**_as_recorded_before_new_fields(data))

    @classmethod
    def from_json(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def science(self) -> dict:
        """The fields that decide the numbers (everything but RUNTIME_FIELDS)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def validate(self) -> "RunConfig":
        """Raise ValueError naming the first bad value and what is allowed."""
        def bad(name, value, allowed):
            raise ValueError(f"{name}={value!r} is invalid: {allowed}")

        for f in fields(self):  # types first (a hand-edited config.json, a papermill parameter)
            value = getattr(self, f.name)
            if not _has_type(value, str(f.type)):
                bad(f.name, value, f"a value of type {f.type}")
        if self.profile not in PROFILES:
            bad("profile", self.profile, f"one of {', '.join(PROFILES)}")
        if self.layers < 1:
            bad("layers", self.layers, "an integer >= 1")
        if not 0 <= self.seed < 2**32:
            bad("seed", self.seed, "an integer from 0 to 2**32 - 1 (numpy's seed range)")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        if self.uses_lm and self.f not in NOISE_FUNCTIONS:
            bad("f", self.f, f"{self.optimizer} needs one of {', '.join(NOISE_FUNCTIONS)}")
        if not self.uses_lm:  # settings that would do nothing are refused, not ignored
            for name, default in (("f", None), ("c_mode", "running_min"), ("c_reset", "epoch"), ("eps_lm", 1.0)):
                if getattr(self, name) != default:
                    bad(name, getattr(self, name), f"{name} applies to the -lm optimizers only, not {self.optimizer}")
        if self.base_optimizer == "sgd":
            for name, default in (("eps", 0.0), ("betas", (0.9, 0.999))):
                if getattr(self, name) not in (None, default):
                    bad(name, getattr(self, name), f"{name} applies to the adaptive optimizers only, not {self.optimizer}")
        parse_c_mode(self.c_mode)
        if self.c_reset not in C_RESETS:
            bad("c_reset", self.c_reset, f"one of {', '.join(C_RESETS)}")
        if self.eval_mode not in EVAL_MODES:
            bad("eval_mode", self.eval_mode, f"one of {', '.join(EVAL_MODES)}")
        if self.wdrop_mode not in WDROP_MODES:
            bad("wdrop_mode", self.wdrop_mode, f"one of {', '.join(WDROP_MODES)}")
        if self.embed_padding not in EMBED_PADDINGS:
            bad("embed_padding", self.embed_padding, f"one of {', '.join(EMBED_PADDINGS)}")
        for name in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, getattr(self, name), "a probability in [0, 1)")
        for name in ("emsize", "nhid", "epochs", "batch_size", "eval_batch_size",
                     "test_batch_size"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), "an integer >= 1")
        if self.bptt < 2:
            bad("bptt", self.bptt, "an integer >= 2")
        if self.lr is not None and not 0 < self.lr < math.inf:
            bad("lr", self.lr, "a finite number > 0")
        if self.eps is not None and not 0 <= self.eps < math.inf:
            bad("eps", self.eps, "a finite number >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas) or len(self.betas) != 2:
            bad("betas", self.betas, "two numbers in [0, 1)")
        for name in ("wdecay", "clip", "alpha", "beta"):
            if not 0 <= getattr(self, name) < math.inf:
                bad(name, getattr(self, name), "a finite number >= 0")
        if not 0 < self.eps_lm < math.inf:
            bad("eps_lm", self.eps_lm, "a finite number > 0")
        if (any(e < 1 for e in self.when)
                or any(a >= b for a, b in zip(self.when, self.when[1:]))):
            bad("when", self.when, "increasing epoch numbers >= 1, each at most once")
        for name in ("max_train_tokens", "max_eval_tokens", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                bad(name, value, "an integer >= 1, or None")
        if not re.fullmatch(DEVICES, str(self.device)):
            bad("device", self.device, "auto, cpu, cuda, cuda:<n> or mps")
        return self

    def resolved(self) -> "RunConfig":
        """Fill lr/eps from the profile and the published tables; validate."""
        self.validate()
        profile = PROFILES[self.profile]
        lr, eps = PAPER_LR_EPS[self.base_optimizer][min(self.layers, 3)]
        lr = profile.lr.get(self.base_optimizer, lr)
        return replace(self, lr=self.lr if self.lr is not None else lr,
                       eps=self.eps if self.eps is not None else eps).validate()


def _has_type(value, annotation: str) -> bool:
    """Whether ``value`` fits a RunConfig annotation (bool is not an int or a float here)."""
    if "| None" in annotation and value is None:
        return True
    base = annotation.replace("| None", "").strip()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return number
    if base == "bool":
        return isinstance(value, bool)
    if base == "str":
        return isinstance(value, str)
    if base == "list[int]":
        return isinstance(value, list) and all(_has_type(v, "int") for v in value)
    if base.startswith("tuple"):
        return isinstance(value, tuple) and len(value) == 2 and all(_has_type(v, "float") for v in value)
    return True


@dataclass(frozen=True)
class Profile:
    description: str
    overrides: dict          # RunConfig fields this profile changes from the paper values
    lr: dict = field(default_factory=dict)   # base optimizer -> lr for every depth
    grid_jobs: int = 1       # runs at once in `grid` (measured best on the target machine)
    # measure each finished run's sharpness (notebook 05's default settings) before its
    # process ends: the weights are not committed, and a machine lost between sessions
    # takes them with it, while sharpness.json is committed beside the metrics
    measure_sharpness: bool = False
    # the profile's whole grid for `grid --planned`, in training order: blocks of
    # (depths, variant names, seeds), each expanded depth, then variant, then seed.
    # Empty: the study's 45 runs (five variants, three depths, seeds 141, 6 and 42).
    grid_plan: tuple = ()


# The study's grid (SPEC §5): five variants (grid.VARIANTS names them) x three depths x three seeds
STUDY_VARIANTS = ("adabelief", "lm-x2", "lm-x", "lm-sqrt", "lm-cbrt")
STUDY_LAYERS = (1, 2, 3)
STUDY_SEEDS = (141, 6, 42)
# Issue #17's grid. First the study's five variants and three ablations at the study's seeds
# (72 runs). Then more seeds for the study's five where the paired spread measured on those
# seeds asks for them (regime.seeds_from_spread on 2026-12-05: a 95% interval of at most 1%
# of AdaBelief's perplexity needs 4 seeds at one layer, 3 at two and 8 at three), one seed
# at a time, so that every finished block adds a full set of pairs; three layers first, where
# the answer is least resolved (30 runs, 102 in all).
_CONVERGED_PLAN = (
    (STUDY_LAYERS, STUDY_VARIANTS + ("lm-cbrt-czero", "adabelief-whh-trained", "lm-cbrt-whh-trained"), STUDY_SEEDS),
    ((3,), STUDY_VARIANTS, (1,)),
    ((3,), STUDY_VARIANTS, (2,)),
    ((1,), STUDY_VARIANTS, (1,)),
    ((3,), STUDY_VARIANTS, (3,)),
    ((3,), STUDY_VARIANTS, (4,)),
    ((3,), STUDY_VARIANTS, (5,)),
)

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "SPEC §5 exactly: full PTB, 400/1150 AWD-LSTM, 200 epochs, lr/10 at 100 and 145. "
        "For a GPU (hours per run).", {}),
    "cpu": Profile(
        "Reduced scale for a 2-core machine, where its 45-run grid trained in 2.8 hours, "
        "two runs at a time (README, Performance): emsize 200, nhid 400, the first 200k "
        "training tokens (21.5% of PTB), 8 epochs with lr/10 before epochs 5 and 7 (the "
        "study's 99:45:56 split of 200 epochs, scaled); full validation and test splits.",
        dict(emsize=200, nhid=400, epochs=8, when=[5, 7], max_train_tokens=200_000), grid_jobs=2),
    "converged": Profile(
        "Reduced scale trained into the study's regime (issue #17; README, Results): pilot "
        "candidate D. emsize 128, nhid 256, the first 200k training tokens, 45 epochs with "
        "lr/10 before epochs 23 and 33 (the study's 99:45:56 split, scaled), lr 1e-2 at every "
        "depth (at the published 1e-3 the 1-layer model still underfits after 30 epochs), "
        "test scored at batch 10 like validation; full validation and test splits.",
        dict(emsize=128, nhid=256, epochs=45, when=[23, 33], max_train_tokens=200_000, test_batch_size=10),
        lr={"adabelief": 1e-2}, grid_jobs=2, measure_sharpness=True, grid_plan=_CONVERGED_PLAN),
    "smoke": Profile(
        "Tiny model (16/32) on the first 20k training tokens and 4k eval tokens, 2 epochs, "
        "lr/10 at epoch 2. Exercises every code path in seconds; numbers mean nothing.",
        dict(emsize=16, nhid=32, epochs=2, when=[2], max_train_tokens=20_000,
             max_eval_tokens=4_000),
        lr={"adabelief": 1e-2, "adam": 1e-2}, grid_jobs=2),
}


def make_config(profile: str = "paper", **overrides) -> RunConfig:
    """A resolved config: the profile's values, then ``overrides`` (None = keep)."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is invalid: one of {', '.join(PROFILES)}")
    values = {**PROFILES[profile].overrides,
              **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config fields: {', '.join(unknown)}")
    return RunConfig(profile=profile, **values).resolved()
