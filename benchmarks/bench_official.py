"""Side-by-side speed of this project's MIL training and evaluation against the paper's public code (issue 12).

Harvey, Loevlie & Hughes, "Normal Guidance is what Attention Needs" (2026) publish a per-bag reference
implementation (``src/models.py`` ``PoolClf``, ``src/layers.py``, ``src/losses.py``, ``src/utils.py``). This script
imports that code at run time from a local checkout given with ``--official-src PATH`` (nothing of it lives in this
repository), builds the same data for both sides, copies the weights across, checks that the two compute the same
thing, and times both in one process, interleaved.

What is compared (768-d slice embeddings, 64-bag batches, two bag-length regimes U{20..60} and U{100..300}):

- Models: ABMIL, TransMIL (768-d tokens, 8 heads, no input projection: ``build_mil_network("transmil", 768)``) and
  SmAP (theirs: ``PoolClf(pooling="SmAP")``, the "early" variant with spectral norm; ours: ``smap`` with
  ``pool_smoothed=True`` and, when the installed ``SmAPMIL`` accepts it, ``adjacency="row"``, their row-normalised
  chain adjacency; without it our symmetric normalisation differs from theirs at the two ends of each bag). Each
  without and with Normal Guidance ("+NG": their ``GuidedAttentionL1Loss(alpha=0, beta=1, divergence="forward
  kl")``, ours ``MILObjective(ng_weight=1, divergence="forward_kl", ng_heads="each")``; without NG their
  ``ERMLoss`` and ours ``ng_weight=0``).
- Data: a seeded shifted-mean generator in this script (N(0, 1) float32 rows; a positive bag, probability 1/2, has +1
  added to feature 0 on 12 consecutive slices). Content does not change the work done; both sides get the very same
  tensors.
- Equality (fp32, first batch of each regime): weights copied theirs -> ours (:func:`map_official_state`), logits
  compared (max |difference|), attention compared (theirs renormalised for TransMIL, see below), loss compared where
  the two definitions agree, and the gradients of one training step compared (every parameter, mapped by name).
- Training step, theirs: exactly the body of their ``train_one_epoch`` loop per batch (``collate_fn`` on the
  ``(x_i, length, y)`` items, ``zero_grad``, ``parameters_to_vector``, forward, criterion, backward,
  ``clip_grad_norm_`` per parameter group, SGD momentum 0.9 step, the ``.item()`` reads and the list extends).
  Ours: :func:`monai_ng.data.bag_dataset.collate_packed_bags` on the same bags as dict items (the packed ``[T, D]``
  layout the library's loaders use: no padding), :func:`prepare_bag_batch`,
  forward, :class:`MILObjective`, backward, grad-norm clip 1.0, SGD momentum 0.9 step. Eval: the body of their
  ``evaluate`` loop (``no_grad``) against ours (``inference_mode``: collate, prepare, forward, objective).
- Timing: at each ``--threads`` count, after one warm-up call each on 16 bags, theirs and ours run A B A B for
  ``--rounds`` rounds over ``--batches`` batches; ratio = ours / theirs in bags/s, median of the per-round ratios. Also: our collation + batch preparation
  as a share of our training step (median of per-round ratios), and for TransMIL(+NG) our training FLOP rate
  (``flops_per_bag`` over the valid slices, training = 3 x forward, as ``bench_mil.py`` counts it) over the rate of a
  fp32 ``torch.mm`` timed in the same round.

Known differences (reported, not hidden):

- TransMIL's localization attention: theirs is the class-token query row of the last layer with the class token's
  own column dropped but *not renormalised* (each head sums to ``1 - a_cls``); ours renormalises it over the slices.
  Attention is compared after renormalising theirs. Their NG term is therefore computed on a distribution that does
  not sum to 1 and differs from ours: TransMIL+NG losses are reported, and compared only as "their loss on their
  attention renormalised", which must equal ours.
- Their NG clamps the reference at ``eps`` before weighting (ours weights by the unclamped reference) and computes
  the variance as ``E[j^2] - mu^2`` (ours as ``E[(j - mu)^2]``): equal to float rounding, reported as such.

The one local patch: their ``GuidedAttentionL1Loss.forward`` takes no ``**kwargs``, while their own training loop
passes ``n=len(dataset)`` to the criterion (the other losses accept and ignore it). Their files are not edited:
:func:`needs_keyword_patch` detects the missing ``**kwargs`` with :mod:`inspect` and the criterion is wrapped in
:class:`KeywordFilteredCriterion`, which drops the keyword arguments its ``forward`` does not accept. The output says
when the patch was applied.

``--device cuda`` moves both models to the GPU (their loop and ours both collate on the CPU and copy the batch to the
device, as their loop does), synchronises around every timed call, and ``--amp bf16`` wraps forward + loss of both
sides in ``torch.autocast`` (a model whose either side fails under autocast runs in fp32 on both, and says so).

Usage::

    python3 benchmarks/bench_official.py --official-src /path/to/normal-guidance --quick      # smoke run: 1 thread, 1 round, 1 batch
    python3 benchmarks/bench_official.py --official-src /path/to/normal-guidance --write-docs # full run, docs table
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from machine_info import machine_info, write_results  # noqa: E402

from monai_ng.data.bag_dataset import BagKeys, collate_packed_bags  # noqa: E402
from monai_ng.engines import prepare_bag_batch  # noqa: E402
from monai_ng.engines.host_memory import retain_freed_host_memory  # noqa: E402
from monai_ng.losses.mil_objective import MILObjective  # noqa: E402
from monai_ng.networks import build_mil_network  # noqa: E402
from monai_ng.networks.smap import SmAPMIL  # noqa: E402

DIM = 768
BATCH = 64
REGIMES: dict[str, tuple[int, int]] = {"20-60": (20, 60), "100-300": (100, 300)}
OFFICIAL_MODULES = ("utils", "layers", "models", "losses", "datasets")
DOCS_BEGIN = "<!-- bench_official:begin -->"
DOCS_END = "<!-- bench_official:end -->"
#: the section a ``--retain-freed-memory`` run rewrites
DOCS_RETAINED_BEGIN = "<!-- bench_official_retained_memory:begin -->"
DOCS_RETAINED_END = "<!-- bench_official_retained_memory:end -->"
#: the section a ``--device cuda`` run rewrites
DOCS_CUDA_BEGIN = "<!-- bench_official_cuda:begin -->"
DOCS_CUDA_END = "<!-- bench_official_cuda:end -->"
GOAL_RATIO = 1.5
WARMUP_BAGS = 16  # each timed call is warmed up once on the first bags of the first batch

# Key mapping, official PoolClf state -> ours, per pooling kind: one prefix rule must match each key (first match
# wins), then every substring rule is applied.
_PREFIX_RULES: dict[str, list[tuple[str, str]]] = {
    "abmil": [("pool.mlp.0.", "attention_v."), ("pool.mlp.2.", "attention_w."), ("clf.", "classifier.")],
    "smap": [
        ("pool.mlp.0.", "attention_v."),
        ("pool.mlp.2.", "attention_w."),
        ("pool.sm_layer.raw_alpha", "alpha_logit"),
        ("clf.", "classifier."),
    ],
    "transmil": [
        ("pool.cls_token", "class_token"),
        ("pool.layer1.", "layers.0."),
        ("pool.layer2.", "layers.1."),
        ("pool.pos_layer.proj1.conv.", "ppeg.conv3."),
        ("pool.pos_layer.proj2.conv.", "ppeg.conv5."),
        ("pool.pos_layer.proj3.conv.", "ppeg.conv7."),
        ("clf.", "classifier."),
    ],
}
_SUBSTRING_RULES: dict[str, list[tuple[str, str]]] = {
    "abmil": [],
    "smap": [],
    "transmil": [
        (".attn.in_proj_weight", ".qkv.weight"),
        (".attn.in_proj_bias", ".qkv.bias"),
        (".attn.out_proj.", ".proj."),
    ],
}
_OFFICIAL_POOLING = {"abmil": "ABMIL", "transmil": "TransMIL", "smap": "SmAP"}


# ---------------------------------------------------------------------------------------------------- official code
@dataclasses.dataclass
class OfficialCode:
    """References to the official modules, imported from ``src`` and removed from ``sys.modules`` again."""

    src: Path
    utils: ModuleType
    layers: ModuleType
    models: ModuleType
    losses: ModuleType
    datasets: ModuleType
    commit: str | None


def official_src_problem(path: str | os.PathLike[str] | None) -> str | None:
    """Why ``path`` cannot be used as a checkout of the official code (``None`` when it can)."""
    if path is None or str(path) == "":
        return "no --official-src given (the path of a local checkout of the paper's public code)"
    models = Path(path) / "src" / "models.py"
    if not models.is_file():
        return f"{models} not found (--official-src must be a checkout of the paper's public code)"
    return None


def load_official(path: str | os.PathLike[str]) -> OfficialCode:
    """Import ``utils``, ``layers``, ``models``, ``losses``, ``datasets`` from ``PATH/src``, leaving none importable.

    Their modules import each other by generic top-level names, so ``PATH/src`` goes first on ``sys.path`` while they
    load; afterwards it is removed, the five names leave ``sys.modules`` (any module of the same name that was there
    before is put back) and only the returned references keep them alive.

    Raises:
        FileNotFoundError: ``PATH/src/models.py`` is missing.
    """
    problem = official_src_problem(path)
    if problem is not None:
        raise FileNotFoundError(problem)
    src = (Path(path) / "src").resolve()
    saved = {name: sys.modules.pop(name) for name in OFFICIAL_MODULES if name in sys.modules}
    sys.path.insert(0, str(src))
    try:
        loaded = {name: importlib.import_module(name) for name in OFFICIAL_MODULES}
    finally:
        sys.path.remove(str(src))
        for name in OFFICIAL_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
        commit = proc.stdout.strip() or None
    return OfficialCode(src=src, commit=commit, **loaded)


def needs_keyword_patch(forward: Callable[..., Any], names: Sequence[str] = ("n",)) -> bool:
    """True when ``forward`` accepts neither ``**kwargs`` nor every keyword in ``names`` (their loop passes ``n``)."""
    params = inspect.signature(forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return False
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return not set(names) <= accepted


class KeywordFilteredCriterion(nn.Module):
    """Calls ``criterion`` with only the keyword arguments its ``forward`` accepts (the documented local patch).

    Args:
        criterion: a loss module whose ``forward`` lacks ``**kwargs``.

    The dropped names of the last call are kept in ``dropped`` (for the report).
    """

    def __init__(self, criterion: nn.Module) -> None:
        super().__init__()
        self.criterion = criterion
        params = inspect.signature(criterion.forward).parameters.values()
        self.accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self.accepted = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        self.dropped: tuple[str, ...] = ()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.accepts_any:
            self.dropped = tuple(sorted(set(kwargs) - self.accepted))
            kwargs = {k: v for k, v in kwargs.items() if k in self.accepted}
        return self.criterion(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------ weight map
def official_key(kind: str, key: str) -> str:
    """Our state-dict key for the official ``PoolClf`` key ``key`` of pooling ``kind`` (abmil, transmil, smap).

    Raises:
        ValueError: unknown ``kind``.
        KeyError: no rule maps ``key``.
    """
    if kind not in _PREFIX_RULES:
        raise ValueError(f"official_key: kind must be one of {sorted(_PREFIX_RULES)}, got {kind!r}")
    for prefix, target in _PREFIX_RULES[kind]:
        if key.startswith(prefix):
            mapped = target + key[len(prefix) :]
            break
    else:
        raise KeyError(f"official_key: no mapping for official {kind} key {key!r}")
    for old, new in _SUBSTRING_RULES[kind]:
        mapped = mapped.replace(old, new)
    return mapped


def map_official_state(kind: str, theirs: dict[str, Tensor], ours: dict[str, Tensor]) -> dict[str, Tensor]:
    """The official state (parameters and buffers, spectral-norm ``_u``/``_v`` included) under our keys and shapes.

    Args:
        kind: ``"abmil"``, ``"transmil"`` or ``"smap"``.
        theirs: the official model's ``state_dict()``.
        ours: our model's ``state_dict()`` (target keys and shapes; values unused).

    Returns:
        A state dict with exactly ``ours``'s keys, each official tensor reshaped to our shape (the class token
        ``[1, C]`` -> ``[1, 1, C]``).

    Raises:
        KeyError: an official key has no mapping, maps to a key we do not have, or one of our keys gets no value.
        ValueError: sizes differ.
    """
    out: dict[str, Tensor] = {}
    for key, value in theirs.items():
        target = official_key(kind, key)
        if target not in ours:
            raise KeyError(f"official {kind} key {key!r} maps to {target!r}, which our model does not have")
        if value.numel() != ours[target].numel():
            raise ValueError(
                f"official {kind} key {key!r} {tuple(value.shape)} does not fit {target!r} {tuple(ours[target].shape)}"
            )
        out[target] = value.detach().clone().reshape(ours[target].shape)
    missing = sorted(set(ours) - set(out))
    if missing:
        raise KeyError(f"our {kind} keys without an official value: {missing}")
    return out


# ------------------------------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class Bag:
    """One synthetic bag: ``x`` ``[S, D]`` float32 and its label."""

    x: Tensor
    label: int


def shifted_mean_bags(seed: int, low: int, high: int, n: int, dim: int = DIM, window: int = 12) -> list[Bag]:
    """``n`` bags of U{low..high} rows of N(0, 1); a positive bag (p = 1/2) has +1 on feature 0 of ``window`` rows."""
    if not 1 <= low <= high:
        raise ValueError(f"shifted_mean_bags: need 1 <= low <= high, got {low}, {high}")
    rng = np.random.default_rng(seed)
    bags = []
    for _ in range(n):
        s = int(rng.integers(low, high + 1))
        x = rng.standard_normal((s, dim), dtype=np.float32)
        y = int(rng.random() < 0.5)
        if y:
            w = min(window, s)
            start = int(rng.integers(0, s - w + 1))
            x[start : start + w, 0] += 1.0
        bags.append(Bag(torch.from_numpy(x), y))
    return bags


def official_items(bags: Sequence[Bag]) -> list[tuple[Tensor, int, Tensor]]:
    """Items as their dataset yields them: ``(x_i [S_i, D], S_i, y_i [1] float)``."""
    return [(b.x, int(b.x.shape[0]), torch.tensor([float(b.label)])) for b in bags]


def our_items(bags: Sequence[Bag], offset: int = 0) -> list[dict[str, Any]]:
    """Items as :class:`~monai_ng.data.BagDataset` yields them (same tensors; slice labels unknown, -1)."""
    return [
        {
            BagKeys.EMBEDDINGS: b.x,
            BagKeys.LABEL: b.label,
            BagKeys.SLICE_LABELS: torch.full((int(b.x.shape[0]),), -1, dtype=torch.int8),
            BagKeys.SCAN_ID: f"bag{offset + i}",
            BagKeys.INDEX: offset + i,
        }
        for i, b in enumerate(bags)
    ]


# ---------------------------------------------------------------------------------------------------------- models
@dataclasses.dataclass
class ModelSpec:
    """One row of the comparison."""

    label: str
    kind: str
    ng: bool


MODEL_SPECS = [
    ModelSpec(label + suffix, kind, ng)
    for kind, label in (("abmil", "ABMIL"), ("transmil", "TransMIL"), ("smap", "SmAP"))
    for suffix, ng in (("", False), ("+NG", True))
]


def smap_row_adjacency_supported() -> bool:
    """Whether our :class:`SmAPMIL` offers ``adjacency`` (their row-normalised chain adjacency)."""
    return "adjacency" in inspect.signature(SmAPMIL.__init__).parameters


def our_network_kwargs(kind: str) -> dict[str, Any]:
    """Constructor keyword arguments of our network matching the official model of ``kind``."""
    if kind == "smap":
        kwargs: dict[str, Any] = {"pool_smoothed": True}
        if smap_row_adjacency_supported():
            kwargs["adjacency"] = "row"
        return kwargs
    return {}


class Side:
    """A model, criterion and SGD optimiser of one side, with its training step and eval pass over batches."""

    def __init__(
        self, network: nn.Module, criterion: nn.Module, device: torch.device, amp: torch.dtype | None, lr: float
    ) -> None:
        self.network = network.to(device)
        self.criterion = criterion
        self.device = device
        self.amp = amp
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=lr, momentum=0.9)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp)


class OfficialSide(Side):
    """Their ``train_one_epoch`` / ``evaluate`` loop bodies, per batch of ``(x_i, length, y)`` items."""

    def __init__(self, code: OfficialCode, spec: ModelSpec, device: torch.device, amp: torch.dtype | None, lr: float):
        network = code.models.PoolClf(
            in_features=DIM, out_features=1, pooling=_OFFICIAL_POOLING[spec.kind], num_heads=8
        )
        if spec.ng:
            criterion: nn.Module = code.losses.GuidedAttentionL1Loss(
                alpha=0.0, beta=1.0, criterion=nn.BCEWithLogitsLoss(), divergence="forward kl"
            )
        else:
            criterion = code.losses.ERMLoss(criterion=nn.BCEWithLogitsLoss())
        self.patched = needs_keyword_patch(criterion.forward)
        if self.patched:
            criterion = KeywordFilteredCriterion(criterion)
        super().__init__(network, criterion, device, amp, lr)
        self.collate_fn = code.utils.collate_fn
        self.dataset_size = 10_000  # their loop passes n=len(dataset); no loss here uses it

    def _to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if self.device.type == "cuda":
            images, labels = images.to(self.device), labels.to(self.device)
        return images, labels

    def losses(self, items: Sequence[tuple[Tensor, int, Tensor]]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(logits [B, 1], attention [T, H], losses)`` of one batch (no optimiser step)."""
        images, lengths, labels = self.collate_fn(list(items))
        images, labels = self._to_device(images, labels)
        params = nn.utils.parameters_to_vector(self.network.parameters())
        with self.autocast():
            logits, attn = self.network(images, lengths)
            out = self.criterion(logits, labels, attn_weights=attn, lengths=lengths, params=params, n=self.dataset_size)
        return logits, attn, out

    def train(self, batches: Sequence[Sequence[tuple[Tensor, int, Tensor]]]) -> None:
        self.network.train()
        record: dict[str, Any] = {"labels": [], "logits": [], "loss": 0.0, "nll": 0.0}
        for items in batches:
            images, lengths, labels = self.collate_fn(list(items))
            images, labels = self._to_device(images, labels)
            self.optimizer.zero_grad()
            params = nn.utils.parameters_to_vector(self.network.parameters())
            with self.autocast():
                logits, attn = self.network(images, lengths)
                out = self.criterion(
                    logits, labels, attn_weights=attn, lengths=lengths, params=params, n=self.dataset_size
                )
            out["loss"].backward()
            for group in self.optimizer.param_groups:
                nn.utils.clip_grad_norm_(group["params"], max_norm=1.0)
            self.optimizer.step()
            _record(record, out, labels, logits, len(lengths) / self.dataset_size, self.device)

    def eval(self, batches: Sequence[Sequence[tuple[Tensor, int, Tensor]]]) -> None:
        self.network.eval()
        record: dict[str, Any] = {"labels": [], "logits": [], "loss": 0.0, "nll": 0.0}
        with torch.no_grad():
            for items in batches:
                images, lengths, labels = self.collate_fn(list(items))
                images, labels = self._to_device(images, labels)
                params = nn.utils.parameters_to_vector(self.network.parameters())
                with self.autocast():
                    logits, attn = self.network(images, lengths)
                    out = self.criterion(
                        logits, labels, attn_weights=attn, lengths=lengths, params=params, n=self.dataset_size
                    )
                _record(record, out, labels, logits, len(lengths) / self.dataset_size, self.device)

    def collate(self, batches: Sequence[Sequence[tuple[Tensor, int, Tensor]]]) -> None:
        for items in batches:
            self._to_device(*self.collate_fn(list(items))[::2])


def _record(
    record: dict[str, Any], out: dict[str, Tensor], labels: Tensor, logits: Tensor, share: float, device: torch.device
) -> None:
    """The per-batch bookkeeping of their loops: two ``.item()`` reads and the label / logit list extends."""
    record["loss"] += share * out["loss"].item()
    record["nll"] += share * out["nll"].item()
    if device.type == "cuda":
        labels, logits = labels.detach().cpu(), logits.detach().cpu()
    record["labels"].extend(labels)
    record["logits"].extend(logits)


class OurSide(Side):
    """Our training step and eval pass: ``collate_packed_bags`` + ``prepare_bag_batch`` + network + ``MILObjective``."""

    def __init__(
        self, spec: ModelSpec, device: torch.device, amp: torch.dtype | None, lr: float, packed: bool = True
    ) -> None:
        network = build_mil_network(spec.kind, DIM, **our_network_kwargs(spec.kind))
        if not packed:
            network.packed = False  # per-slice layers on the padded [B, N, D] grid (masked attention)
        objective = MILObjective(ng_weight=1.0 if spec.ng else 0.0, divergence="forward_kl", ng_heads="each")
        super().__init__(network, objective, device, amp, lr)

    def batch(self, items: Sequence[dict[str, Any]]) -> tuple[Tensor, dict[str, Any], dict[str, Tensor]]:
        x, target, _, kwargs = prepare_bag_batch(collate_packed_bags(items), self.device)
        return x, target, kwargs

    def losses(self, items: Sequence[dict[str, Any]]) -> tuple[Any, Tensor]:
        """``(MILOutput, loss)`` of one batch (no optimiser step)."""
        x, target, kwargs = self.batch(items)
        with self.autocast():
            out = self.network(x, **kwargs)
            return out, self.criterion(out, target)

    def train(self, batches: Sequence[Sequence[dict[str, Any]]]) -> None:
        self.network.train()
        for items in batches:
            x, target, kwargs = self.batch(items)
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = self.criterion(self.network(x, **kwargs), target)
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
            self.optimizer.step()

    def eval(self, batches: Sequence[Sequence[dict[str, Any]]]) -> None:
        self.network.eval()
        with torch.inference_mode():
            for items in batches:
                x, target, kwargs = self.batch(items)
                with self.autocast():
                    self.criterion(self.network(x, **kwargs), target)

    def collate(self, batches: Sequence[Sequence[dict[str, Any]]]) -> None:
        for items in batches:
            self.batch(items)


# ---------------------------------------------------------------------------------------------------------- checks
def split_official_attention(attn: Tensor, lengths: Sequence[int]) -> list[Tensor]:
    """Their packed attention ``[T, H]`` as one ``[S_i, H]`` block per bag."""
    return list(torch.split(attn, list(lengths), dim=0))


def renormalise(blocks: Sequence[Tensor]) -> Tensor:
    """Each bag's ``[S_i, H]`` block divided by its per-head sum, packed back to ``[T, H]``."""
    return torch.cat([b / b.sum(dim=0, keepdim=True) for b in blocks], dim=0)


def packed_attention(attention: Tensor, lengths: Sequence[int]) -> Tensor:
    """Our padded attention ``[B, N, H]`` packed to the valid rows ``[T, H]`` (their layout)."""
    return torch.cat([attention[b, :n] for b, n in enumerate(lengths)], dim=0)


def check_pair(theirs: OfficialSide, ours: OurSide, spec: ModelSpec, bags: Sequence[Bag]) -> dict[str, Any]:
    """Outputs, loss and one step's gradients of both sides on the same bags, in fp32 (same weights)."""
    t_items, o_items = official_items(bags), our_items(bags)
    lengths = [int(b.x.shape[0]) for b in bags]
    row: dict[str, Any] = {"model": spec.label}
    amp = theirs.amp, ours.amp
    theirs.amp = ours.amp = None
    try:
        theirs.network.eval(), ours.network.eval()
        with torch.no_grad():
            t_logits, t_attn, t_loss = theirs.losses(t_items)
            o_out, o_loss = ours.losses(o_items)
        row["max_abs_logit_diff"] = float((t_logits.reshape(-1) - o_out.logits).abs().max())
        t_blocks = split_official_attention(t_attn, lengths)
        o_attn = packed_attention(o_out.attention, lengths)
        t_cmp = renormalise(t_blocks) if spec.kind == "transmil" else t_attn
        row["attention_renormalised"] = spec.kind == "transmil"
        row["max_abs_attention_diff"] = float((t_cmp - o_attn).abs().max())
        row["their_attention_mass_min"] = float(min(float(b.sum(dim=0).min()) for b in t_blocks))
        row["loss_theirs"], row["loss_ours"] = float(t_loss["loss"]), float(o_loss)
        row["nll_theirs"], row["bce_ours"] = float(t_loss["nll"]), ours.criterion.last_terms["bce"]
        row["loss_defined_alike"] = not (spec.kind == "transmil" and spec.ng)
        if row["loss_defined_alike"]:
            row["abs_loss_diff"] = abs(row["loss_theirs"] - row["loss_ours"])
        else:  # their NG on their attention renormalised must equal ours
            images, lens, labels = theirs.collate_fn(list(t_items))
            params = nn.utils.parameters_to_vector(theirs.network.parameters())
            with torch.no_grad():
                renorm = renormalise(t_blocks)
                alt = theirs.criterion(
                    t_logits, labels.to(t_logits.device), attn_weights=renorm, lengths=lens, params=params
                )
            row["loss_theirs_renormalised"] = float(alt["loss"])
            row["abs_loss_diff_renormalised"] = abs(row["loss_theirs_renormalised"] - row["loss_ours"])
        if row["loss_defined_alike"]:
            # gradients of one training-mode step (spectral norm's power iteration runs alike on both sides)
            theirs.network.train(), ours.network.train()
            theirs.optimizer.zero_grad(set_to_none=True), ours.optimizer.zero_grad(set_to_none=True)
            _, _, t_train = theirs.losses(t_items)
            _, o_train = ours.losses(o_items)
            t_train["loss"].backward()
            o_train.backward()
            ours_params = dict(ours.network.named_parameters())
            worst, scale = 0.0, 0.0
            for name, p in theirs.network.named_parameters():
                q = ours_params[official_key(spec.kind, name)]
                if p.grad is None or q.grad is None:
                    raise RuntimeError(f"{spec.label}: no gradient for {name}")
                worst = max(worst, float((p.grad.reshape(q.shape) - q.grad).abs().max()))
                scale = max(scale, float(p.grad.abs().max()))
            row["max_abs_grad_diff"], row["max_abs_grad"] = worst, scale
        theirs.optimizer.zero_grad(set_to_none=True), ours.optimizer.zero_grad(set_to_none=True)
    finally:
        theirs.amp, ours.amp = amp
    return row


def padded_logit_diff(ours: OurSide, padded: OurSide, items: Sequence[dict[str, Any]]) -> float:
    """Max abs logit difference, in fp32 eval mode, between our packed network and its padded-grid copy."""
    with torch.inference_mode():
        ours.network.eval(), padded.network.eval()
        x, _, kwargs = ours.batch(items)
        return float((ours.network(x, **kwargs).logits - padded.network(x, **kwargs).logits).abs().max())


def amp_works(side: Side, items: Sequence[Any]) -> str | None:
    """``None`` when one forward + loss + backward under autocast runs, else the error (first line)."""
    if side.amp is None:
        return None
    try:
        side.train([items])
    except Exception as exc:  # noqa: BLE001 - any failure means "not under autocast"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


# ---------------------------------------------------------------------------------------------------------- timing
class MatmulProbe:
    """One ``n x n`` ``torch.mm`` (fp32, or bf16 for an autocast run; on the benchmark's device), timed each round."""

    def __init__(self, device: torch.device, n: int | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.n = n or (8192 if device.type == "cuda" else 2048)
        self.dtype = dtype
        gen = torch.Generator().manual_seed(1)
        self.a = torch.randn(self.n, self.n, generator=gen).to(device, dtype)
        self.b = torch.randn(self.n, self.n, generator=gen).to(device, dtype)
        self.out = torch.empty(self.n, self.n, device=device, dtype=dtype)

    def __call__(self) -> None:
        torch.mm(self.a, self.b, out=self.out)

    def gflops(self, seconds: float) -> float:
        return 2.0 * self.n**3 / seconds / 1e9


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (synchronising the GPU before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def interleaved(
    fns: dict[str, Callable[[], None]], warmups: dict[str, Callable[[], None]], rounds: int, device: torch.device
) -> dict[str, list[float]]:
    """Per-round seconds of each function, A B A B ..., after one warm-up call each (``warmups``, or the function)."""
    for key, fn in fns.items():
        warmups.get(key, fn)()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            times[key].append(timed(fn, device))
    return times


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of ``num[r] / den[r]``."""
    if len(num) != len(den) or not num:
        raise ValueError(f"median_ratio: need equal, non-empty round lists, got {len(num)} and {len(den)}")
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def time_pair(
    theirs: OfficialSide,
    ours: OurSide,
    t_batches: list[list[Any]],
    o_batches: list[list[Any]],
    rounds: int,
    device: torch.device,
    probe: MatmulProbe | None,
    padded: OurSide | None = None,
) -> dict[str, Any]:
    """Interleaved train / eval / collate timings of one model pair at the current thread count.

    ``padded``: our network with ``packed = False`` (same weights), timed in the same rounds as a third side.
    """
    fns: dict[str, Callable[[], None]] = {
        "theirs_train": lambda: theirs.train(t_batches),
        "ours_train": lambda: ours.train(o_batches),
        "theirs_eval": lambda: theirs.eval(t_batches),
        "ours_eval": lambda: ours.eval(o_batches),
        "ours_collate": lambda: ours.collate(o_batches),
        "theirs_collate": lambda: theirs.collate(t_batches),
    }
    t_warm, o_warm = [t_batches[0][:WARMUP_BAGS]], [o_batches[0][:WARMUP_BAGS]]
    warm = {
        "theirs_train": lambda: theirs.train(t_warm),
        "ours_train": lambda: ours.train(o_warm),
        "theirs_eval": lambda: theirs.eval(t_warm),
        "ours_eval": lambda: ours.eval(o_warm),
        "ours_collate": lambda: ours.collate(o_warm),
        "theirs_collate": lambda: theirs.collate(t_warm),
    }
    if padded is not None:
        fns["padded_train"] = lambda: padded.train(o_batches)
        fns["padded_eval"] = lambda: padded.eval(o_batches)
        warm["padded_train"] = lambda: padded.train(o_warm)
        warm["padded_eval"] = lambda: padded.eval(o_warm)
    if probe is not None:
        fns["mm"] = probe
    times = interleaved(fns, warm, rounds, device)
    bags = sum(len(b) for b in o_batches)
    row: dict[str, Any] = {"rounds_s": times}
    for key in ("train", "eval"):
        row[f"{key}_ratio"] = median_ratio(times[f"theirs_{key}"], times[f"ours_{key}"])
        for side in ("theirs", "ours"):
            row[f"{side}_{key}_bags_per_s"] = bags / statistics.median(times[f"{side}_{key}"])
        if padded is not None:
            row[f"padded_{key}_ratio"] = median_ratio(times[f"theirs_{key}"], times[f"padded_{key}"])
            row[f"padded_{key}_bags_per_s"] = bags / statistics.median(times[f"padded_{key}"])
    row["collate_share"] = median_ratio(times["ours_collate"], times["ours_train"])
    row["their_collate_share"] = median_ratio(times["theirs_collate"], times["theirs_train"])
    if probe is not None:
        counter = getattr(ours.network, "flops_per_bag", None)
        if counter is not None:
            train_flops = 3.0 * sum(counter(int(it[BagKeys.EMBEDDINGS].shape[0])) for b in o_batches for it in b)
            row["ours_train_gflops"] = train_flops / statistics.median(times["ours_train"]) / 1e9
            row["matmul_gflops"] = statistics.median(probe.gflops(t) for t in times["mm"])
            row["train_matmul_fraction"] = statistics.median(
                train_flops / t / 1e9 / probe.gflops(m) for t, m in zip(times["ours_train"], times["mm"], strict=True)
            )
    return row


# ---------------------------------------------------------------------------------------------------------- report
def _ratio_cell(train: float, evaluation: float) -> str:
    """``train / eval`` ratios, each bold when below the 1.5x goal."""

    def one(v: float) -> str:
        return f"**{v:.2f}**" if v < GOAL_RATIO else f"{v:.2f}"

    return f"{one(train)} / {one(evaluation)}"


def _thread_label(threads: int) -> str:
    return f"{threads} thread{'s' if threads != 1 else ''}"


def markdown(results: dict[str, Any]) -> str:
    """The comparison tables: ratios (model x regime x threads), absolute bags/s, equality checks, FLOP rates."""
    timings = results["timings"]
    columns: list[tuple[str, int]] = []
    for t in timings:
        if (t["regime"], t["threads"]) not in columns:
            columns.append((t["regime"], t["threads"]))
    models: list[str] = []
    for t in timings:
        if t["model"] not in models:
            models.append(t["model"])
    by_key = {(t["model"], t["regime"], t["threads"]): t for t in timings}
    regimes = results.get("regimes", {})

    def header(regime: str, threads: int) -> str:
        mean = regimes.get(regime, {}).get("mean_length")
        extra = f" (mean {mean:.0f})" if mean is not None else ""
        return f"{regime.replace('-', '–')} slices{extra}, {_thread_label(threads)}: train / eval"

    lines = [
        f"Ours / theirs, bags/s (median of {results['rounds']} interleaved round(s) over {results['batches']} "
        f"batch(es) of {BATCH} bags; bold: below the {GOAL_RATIO}× goal):",
        "",
        "| model | " + " | ".join(header(r, t) for r, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in models:
        cells = []
        for r, t in columns:
            row = by_key.get((m, r, t))
            cells.append(_ratio_cell(row["train_ratio"], row["eval_ratio"]) if row else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | regime | threads | train bags/s ours / theirs | eval bags/s ours / theirs | "
        "our collate + prepare share of a train step | their collate share | "
        f"our train GFLOP/s (of same-round {results.get('probe_dtype', 'fp32')} mm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        flops = "–"
        if "ours_train_gflops" in t:
            flops = (
                f"{t['ours_train_gflops']:.1f} ({100 * t['train_matmul_fraction']:.0f}% of {t['matmul_gflops']:.0f})"
            )
        lines.append(
            f"| {t['model']} | {t['regime']} | {t['threads']} | {t['ours_train_bags_per_s']:.0f} / "
            f"{t['theirs_train_bags_per_s']:.0f} | {t['ours_eval_bags_per_s']:.0f} / {t['theirs_eval_bags_per_s']:.0f} | "
            f"{100 * t['collate_share']:.1f} % | {100 * t['their_collate_share']:.1f} % | {flops} |"
        )
    padded_rows = [t for t in timings if "padded_train_ratio" in t]
    if padded_rows:
        lines += [
            "",
            "Our networks on the padded `[B, N, D]` grid (`packed = False`: masked attention over the batch's longest "
            "bag), timed in the same rounds, against theirs and against our packed default:",
            "",
            "| model | regime | threads | padded / theirs: train / eval | padded bags/s: train / eval | "
            "packed / padded: train / eval |",
            "|---|---|---|---|---|---|",
        ]
        for t in padded_rows:
            lines.append(
                f"| {t['model']} | {t['regime']} | {t['threads']} | "
                f"{_ratio_cell(t['padded_train_ratio'], t['padded_eval_ratio'])} | "
                f"{t['padded_train_bags_per_s']:.0f} / {t['padded_eval_bags_per_s']:.0f} | "
                f"{t['ours_train_bags_per_s'] / t['padded_train_bags_per_s']:.2f} / "
                f"{t['ours_eval_bags_per_s'] / t['padded_eval_bags_per_s']:.2f} |"
            )
    lines += [
        "",
        "Same outputs (fp32, weights copied theirs → ours, first batch of each regime):",
        "",
        "| model | regime | max abs logit diff | max abs attention diff | loss theirs / ours | abs loss diff | "
        "max abs grad diff (max abs grad) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results["checks"]:
        att = f"{c['max_abs_attention_diff']:.1e}" + (" (theirs renormalised)" if c["attention_renormalised"] else "")
        if c["loss_defined_alike"]:
            loss_diff = f"{c['abs_loss_diff']:.1e}"
        else:
            loss_diff = (
                f"differs by definition; theirs on renormalised attention {c['loss_theirs_renormalised']:.6f}: "
                f"{c['abs_loss_diff_renormalised']:.1e}"
            )
        grad = f"{c['max_abs_grad_diff']:.1e} ({c['max_abs_grad']:.1e})" if "max_abs_grad_diff" in c else "–"
        padded = ""
        if "max_abs_logit_diff_padded" in c:
            padded = f" (ours packed vs padded: {c['max_abs_logit_diff_padded']:.1e})"
        lines.append(
            f"| {c['model']} | {c['regime']} | {c['max_abs_logit_diff']:.1e}{padded} | {att} | "
            f"{c['loss_theirs']:.6f} / {c['loss_ours']:.6f} | {loss_diff} | {grad} |"
        )
    if results.get("notes"):
        lines.append("")
        lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines)


def docs_section(results: dict[str, Any], table: str) -> str:
    """The body written between the markers of ``docs/performance.md``: machine, load, command, tables."""
    m = results["machine"]
    start = ", ".join(f"{v:.2f}" for v in m["loadavg_start"])
    end = ", ".join(f"{v:.2f}" for v in m.get("loadavg_end", m["loadavg_start"]))
    dev = results["device"] + (f" ({results['device_name']})" if results.get("device_name") else "")
    lines = [
        f"Machine: {m['cpu']}, `nproc` = {m['nproc']}, torch {m['torch']}, Python {m['python']}; device {dev}"
        f"{', autocast ' + results['amp'] if results.get('amp') else ''}"
        f"{'; glibc allocator keeping freed memory (both sides)' if results.get('retain_freed_memory') else ''}. "
        f"Load average at the start {start}, "
        f"at the end {end}. Official code: commit `{results.get('official_commit') or 'unknown'}`. "
        f"Data: {results.get('data', 'unspecified')}.",
        "",
        f"Command: `{results['command']}`",
        "",
        table,
    ]
    return "\n".join(lines)


def docs_markers(device: torch.device, retained: bool) -> tuple[str, str]:
    """The pair of markers a run rewrites: the CUDA section, else the retained-memory or the default CPU one."""
    if device.type == "cuda":
        return DOCS_CUDA_BEGIN, DOCS_CUDA_END
    return (DOCS_RETAINED_BEGIN, DOCS_RETAINED_END) if retained else (DOCS_BEGIN, DOCS_END)


def rewrite_marked_section(text: str, body: str, begin: str = DOCS_BEGIN, end: str = DOCS_END) -> str:
    """``text`` with everything between the ``begin`` and ``end`` marker lines replaced by ``body``.

    Raises:
        ValueError: a marker is missing, repeated, or ``end`` comes before ``begin``.
    """
    for marker in (begin, end):
        count = text.count(marker)
        if count != 1:
            raise ValueError(f"expected the marker {marker!r} exactly once, found it {count} time(s)")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise ValueError(f"the marker {end!r} comes before {begin!r}")
    return text[: i + len(begin)] + "\n" + body.strip("\n") + "\n" + text[j:]


# ------------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--official-src", default=None, help="local checkout of the paper's public code (has src/)")
    parser.add_argument("--quick", action="store_true", help="1 thread, 1 round over 1 batch per regime (smoke run)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="intra-op thread counts (default 1 2; 1 with --quick)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=("bf16",), default=None, help="autocast forward + loss of both sides")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--batches", type=int, default=None, help="64-bag batches per regime (default 3; 1 --quick)")
    parser.add_argument("--models", nargs="+", default=None, help="subset of " + " ".join(s.label for s in MODEL_SPECS))
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "official.json"), help="JSON results")
    parser.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="apply monai_ng.engines.host_memory.retain_freed_host_memory() to this process (both sides) first; "
        "--write-docs then rewrites the second marked section",
    )
    parser.add_argument(
        "--also-padded",
        action="store_true",
        help="also time our networks with packed = False (the padded grid), same weights, in the same rounds",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite the marked section of --docs (the CPU one, the retained-memory one, or the CUDA one)",
    )
    parser.add_argument("--docs", default=str(REPO / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    if args.models:
        known = {s.label for s in MODEL_SPECS}
        unknown = sorted(set(args.models) - known)
        if unknown:
            parser.error(f"unknown --models {unknown}; choose from {sorted(known)}")
    if args.threads is None:
        args.threads = [1] if args.quick else [1, 2]
    if any(t < 1 for t in args.threads):
        parser.error(f"--threads must be positive, got {args.threads}")
    return args


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_official: --device cuda but torch.cuda.is_available() is False")
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = official_src_problem(args.official_src)
    if problem is not None:
        print(f"bench_official: skipped: {problem}")
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    n_batches = args.batches or (1 if args.quick else 3)
    device = _device(args.device)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    code = load_official(args.official_src)
    specs = [s for s in MODEL_SPECS if args.models is None or s.label in args.models]
    retained = retain_freed_host_memory() if args.retain_freed_memory else False
    if args.retain_freed_memory and not retained:
        raise SystemExit("bench_official: --retain-freed-memory but this platform has no glibc mallopt")

    results: dict[str, Any] = {
        "machine": machine_info(),
        "command": shlex.join(["python3", "benchmarks/bench_official.py", *(sys.argv[1:] if argv is None else argv)]),
        "official_src": str(code.src.parent),
        "official_commit": code.commit,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp": args.amp,
        "probe_dtype": "bf16" if amp is not None else "fp32",
        "retain_freed_memory": retained,
        "rounds": rounds,
        "batches": n_batches,
        "threads": args.threads,
        "data": "seeded shifted-mean bags (N(0,1) float32, 768-d; positives +1 on feature 0 over 12 slices)",
        "smap_row_adjacency": smap_row_adjacency_supported(),
        "regimes": {},
        "checks": [],
        "timings": [],
        "notes": [],
    }
    print(f"machine: {results['machine']}", flush=True)
    print(f"official code: {results['official_src']} (commit {code.commit})", flush=True)
    patched = needs_keyword_patch(code.losses.GuidedAttentionL1Loss.forward)
    if patched:
        results["notes"].append(
            "Local patch applied at run time: their `GuidedAttentionL1Loss.forward` has no `**kwargs` but their "
            "training loop passes `n=`; the criterion is wrapped to drop keyword arguments it does not accept "
            "(their files are not edited)."
        )
    if not results["smap_row_adjacency"]:
        results["notes"].append(
            "Our `SmAPMIL` has no `adjacency` option here: it uses the symmetric normalised chain adjacency, theirs "
            "the row-normalised one, so SmAP outputs differ at the two ends of each bag (timings still compare)."
        )
    if any(s.kind == "transmil" for s in specs):
        results["notes"].append(
            "TransMIL: their attention rows drop the class token's column without renormalising (each head sums to "
            "1 − a_cls); attention is compared after renormalising theirs, and their NG term differs from ours by "
            "definition (the check instead evaluates their loss on their renormalised attention)."
        )
    for note in results["notes"]:
        print(f"note: {note}", flush=True)

    try:  # `timeout -s INT` (or Ctrl-C) ends the run early and still writes the rows measured so far
        for regime in args.regimes:
            low, high = REGIMES[regime]
            regime_seed = args.seed + 1000 * list(REGIMES).index(regime)
            batches = [shifted_mean_bags(regime_seed + k, low, high, BATCH) for k in range(n_batches)]
            lengths = [int(b.x.shape[0]) for batch in batches for b in batch]
            results["regimes"][regime] = {
                "low": low,
                "high": high,
                "mean_length": float(np.mean(lengths)),
                "padded_lengths": [max(int(b.x.shape[0]) for b in batch) for batch in batches],
            }
            t_batches = [official_items(b) for b in batches]
            o_batches = [our_items(b, offset=k * BATCH) for k, b in enumerate(batches)]
            print(f"regime {regime}: mean length {results['regimes'][regime]['mean_length']:.1f}", flush=True)
            for spec in specs:
                torch.set_num_threads(args.threads[0])
                torch.manual_seed(args.seed)
                theirs = OfficialSide(code, spec, device, amp, args.lr)
                ours = OurSide(spec, device, amp, args.lr)
                ours.network.load_state_dict(
                    map_official_state(spec.kind, theirs.network.state_dict(), ours.network.state_dict())
                )
                padded, padded_diff = None, None
                if args.also_padded and hasattr(ours.network, "packed"):
                    padded = OurSide(spec, device, amp, args.lr, packed=False)
                    padded.network.load_state_dict(ours.network.state_dict())
                    # before check_pair: its training-mode step moves ours's spectral-norm vectors, not the copy's
                    padded_diff = padded_logit_diff(ours, padded, o_batches[0])
                check = {"regime": regime, **check_pair(theirs, ours, spec, batches[0])}
                if padded_diff is not None:
                    check["max_abs_logit_diff_padded"] = padded_diff
                results["checks"].append(check)
                print(f"  check {spec.label}: { {k: v for k, v in check.items() if k != 'model'} }", flush=True)
                if amp is not None:
                    failures = {"theirs": amp_works(theirs, t_batches[0]), "ours": amp_works(ours, o_batches[0])}
                    if padded is not None:
                        failures["ours padded"] = amp_works(padded, o_batches[0])
                    if any(failures.values()):
                        theirs.amp = ours.amp = None
                        if padded is not None:
                            padded.amp = None
                        results["notes"].append(
                            f"{spec.label} ({regime}) ran in fp32 on both sides: autocast {failures}"
                        )
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    probe = MatmulProbe(device, dtype=amp or torch.float32) if spec.kind == "transmil" else None
                    row = time_pair(theirs, ours, t_batches, o_batches, rounds, device, probe, padded)
                    row.update({"model": spec.label, "regime": regime, "threads": threads})
                    results["timings"].append(row)
                    brief = {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}
                    print(f"  {spec.label} {regime} {threads} thread(s): {brief}", flush=True)
                del theirs, ours, padded
    except KeyboardInterrupt:
        results["notes"].append(
            f"Interrupted (SIGINT) after {len(results['timings'])} timed row(s): the tables hold those only."
        )
        print("interrupted: writing the rows measured so far", flush=True)
    torch.set_num_threads(args.threads[0])
    table = markdown(results)
    write_results(results, table, args.out)
    if args.write_docs:
        path = Path(args.docs)
        markers = docs_markers(device, retained)
        path.write_text(rewrite_marked_section(path.read_text(), docs_section(results, table), *markers))
        print(f"rewrote the bench_official section of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
