"""Tests of the pure parts of ``benchmarks/bench_official.py`` (the side-by-side benchmark against the paper's code).

The official code is not needed: stand-in modules written here carry its state-dict key layout, and their forwards
are written independently from the method's definition (ABMIL, TransMIL, SmAP with a row-normalised chain).
"""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from benchmark_script import load_script
from torch import nn

from monai_ng.data.bag_dataset import BagKeys, collate_bags
from monai_ng.networks import build_mil_network
from monai_ng.networks.smap import SmAPMIL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The script as a module (``sys.path`` restored after its import)."""
    return load_script("bench_official")


# ---------------------------------------------------------------------------------------------- skipping cleanly
def test_skips_without_official_src(bench, tmp_path, capsys):
    out = tmp_path / "official.json"
    assert bench.main(["--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    reason = "no --official-src given (the path of a local checkout of the paper's public code)"
    assert lines == [f"bench_official: skipped: {reason}"]
    assert not out.exists()


def test_skips_when_path_lacks_models(bench, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    out = tmp_path / "official.json"
    assert bench.main(["--official-src", str(tmp_path), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bench_official: skipped: ")
    assert str(tmp_path / "src" / "models.py") in lines[0]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- importing theirs
def _write_fake_official(root: Path) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    (src / "utils.py").write_text("VALUE = 41\n")
    (src / "layers.py").write_text("import utils\nVALUE = utils.VALUE + 1\n")
    (src / "models.py").write_text("import layers\nVALUE = layers.VALUE + 1\n")
    (src / "losses.py").write_text("import utils\nVALUE = utils.VALUE - 1\n")
    (src / "datasets.py").write_text("import utils\nVALUE = utils.VALUE * 2\n")
    return src


def test_load_official_leaves_no_trace(bench, tmp_path, monkeypatch):
    src = _write_fake_official(tmp_path / "checkout")
    sentinel = ModuleType("utils")
    monkeypatch.setitem(sys.modules, "utils", sentinel)
    for name in ("layers", "models", "losses", "datasets"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    path_before = list(sys.path)
    code = bench.load_official(tmp_path / "checkout")
    assert (code.utils.VALUE, code.layers.VALUE, code.models.VALUE, code.losses.VALUE) == (41, 42, 43, 40)
    assert code.datasets.VALUE == 82 and code.datasets.utils is code.utils
    assert code.layers.utils is code.utils  # their modules still see each other
    assert sys.modules["utils"] is sentinel  # the module of the same name that was there is back
    assert not {"layers", "models", "losses", "datasets"} & set(sys.modules)
    assert sys.path == path_before and str(src.resolve()) not in sys.path


def test_load_official_rejects_missing_models(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="models.py not found"):
        bench.load_official(tmp_path)


# ---------------------------------------------------------------------------------------------- the local patch
class _NoKwargsLoss(nn.Module):
    def forward(self, logits, labels, attn_weights, lengths, params):
        return {"loss": logits.sum() + labels.sum() + attn_weights.sum() + sum(lengths) + params.sum()}


class _KwargsLoss(nn.Module):
    def forward(self, logits, labels, **kwargs):
        return {"loss": logits.sum(), "kwargs": sorted(kwargs)}


class _NamedNLoss(nn.Module):
    def forward(self, logits, labels, n):
        return {"loss": logits.sum() * n}


def test_needs_keyword_patch(bench):
    assert bench.needs_keyword_patch(_NoKwargsLoss().forward)
    assert not bench.needs_keyword_patch(_KwargsLoss().forward)
    assert not bench.needs_keyword_patch(_NamedNLoss().forward)


def test_keyword_filter_drops_only_unknown_keywords(bench):
    wrapped = bench.KeywordFilteredCriterion(_NoKwargsLoss())
    args = {"attn_weights": torch.tensor([0.25]), "lengths": (2, 3), "params": torch.tensor([1.0, 2.0])}
    out = wrapped(torch.tensor([1.0]), torch.tensor([2.0]), n=100, **args)
    assert float(out["loss"]) == 1.0 + 2.0 + 0.25 + 5 + 3.0  # by hand
    assert wrapped.dropped == ("n",)
    with pytest.raises(TypeError, match="params"):  # a missing argument is not hidden
        wrapped(torch.tensor([1.0]), torch.tensor([2.0]), attn_weights=args["attn_weights"], lengths=(2, 3), n=1)
    passthrough = bench.KeywordFilteredCriterion(_KwargsLoss())
    assert passthrough(torch.tensor([1.0]), torch.tensor([0.0]), n=3, lengths=(1,))["kwargs"] == ["lengths", "n"]
    assert passthrough.dropped == ()


# ---------------------------------------------------------------------------------------------- weight mapping
def _abmil_standin(d: int, hidden: int) -> nn.Module:
    model = nn.Module()
    model.pool = nn.Module()
    model.pool.mlp = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    model.clf = nn.Linear(d, 1)
    return model


def _padded(bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags padded with garbage (so a network that reads padding would fail) and their mask."""
    n = max(len(b) for b in bags)
    x = torch.full((len(bags), n, bags[0].shape[1]), 1e3)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)], mask[i, : len(b)] = b, True
    return x, mask


def _bags(seed: int, lengths: tuple[int, ...], d: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, d, generator=gen) for s in lengths]


def test_abmil_mapping_gives_the_standin_outputs(bench):
    torch.manual_seed(0)
    d, hidden = 12, 5
    theirs = _abmil_standin(d, hidden)
    ours = build_mil_network("abmil", d, hidden=hidden)
    ours.load_state_dict(bench.map_official_state("abmil", theirs.state_dict(), ours.state_dict()))
    bags = _bags(1, (4, 7, 1), d)
    with torch.no_grad():
        expected, expected_att = [], []
        for x in bags:  # a = softmax_j(w^T tanh(V x_j + b) + c), logit = clf(sum_j a_j x_j)
            a = torch.softmax(theirs.pool.mlp(x).squeeze(-1), dim=0)
            expected.append(theirs.clf((a[:, None] * x).sum(0)).squeeze())
            expected_att.append(a)
        out = ours.eval()(*_padded(bags))
    torch.testing.assert_close(out.logits, torch.stack(expected), atol=1e-6, rtol=0)
    for i, a in enumerate(expected_att):
        torch.testing.assert_close(out.attention[i, : len(a), 0], a, atol=1e-7, rtol=0)


class _StandinLayer(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads)


class _StandinConv(nn.Module):
    def __init__(self, c: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c, c, k, groups=c, padding="same")

    def forward(self, s: torch.Tensor) -> torch.Tensor:  # [S, C] -> [S, C]
        return self.conv(s.T.unsqueeze(0)).squeeze(0).T


def _transmil_standin(c: int, heads: int) -> nn.Module:
    model = nn.Module()
    model.pool = nn.Module()
    model.pool.cls_token = nn.Parameter(torch.randn(1, c))
    model.pool.layer1 = _StandinLayer(c, heads)
    model.pool.pos_layer = nn.Module()
    for name, k in (("proj1", 3), ("proj2", 5), ("proj3", 7)):
        setattr(model.pool.pos_layer, name, _StandinConv(c, k))
    model.pool.layer2 = _StandinLayer(c, heads)
    model.clf = nn.Linear(c, 1)
    return model


def _transmil_standin_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One bag: class token, residual attention, 1-D PPEG on the slices, residual attention, class-token logit.

    Returns the logit and the last layer's class-token attention over the slices, per head ``[S, H]``, renormalised.
    """
    pool = model.pool
    t = torch.cat([pool.cls_token, x])
    h = pool.layer1.norm(t)
    t = t + pool.layer1.attn(h, h, h, need_weights=False)[0]
    s = t[1:]
    s = s + pool.pos_layer.proj1(s) + pool.pos_layer.proj2(s) + pool.pos_layer.proj3(s)
    t = torch.cat([t[:1], s])
    h = pool.layer2.norm(t)
    out, weights = pool.layer2.attn(h, h, h, need_weights=True, average_attn_weights=False)  # weights [H, L, L]
    t = t + out
    row = weights[:, 0, 1:].T  # [S, H]
    return model.clf(t[0]).squeeze(), row / row.sum(0, keepdim=True)


def test_transmil_mapping_gives_the_standin_outputs(bench):
    torch.manual_seed(0)
    c, heads = 16, 2
    theirs = _transmil_standin(c, heads)
    ours = build_mil_network("transmil", c, num_heads=heads)
    state = bench.map_official_state("transmil", theirs.state_dict(), ours.state_dict())
    assert state["class_token"].shape == (1, 1, c)
    assert torch.equal(state["layers.1.qkv.weight"], theirs.pool.layer2.attn.in_proj_weight)
    assert torch.equal(state["ppeg.conv5.weight"], theirs.pool.pos_layer.proj2.conv.weight)
    ours.load_state_dict(state)
    bags = _bags(2, (5, 9, 3), c)
    with torch.no_grad():
        expected = [_transmil_standin_forward(theirs.eval(), x) for x in bags]
        out = ours.eval()(*_padded(bags))
    torch.testing.assert_close(out.logits, torch.stack([e[0] for e in expected]), atol=1e-5, rtol=0)
    for i, (_, att) in enumerate(expected):
        torch.testing.assert_close(out.attention[i, : len(att)], att, atol=1e-6, rtol=0)


def _smap_standin(d: int, hidden: int, alpha: float) -> nn.Module:
    model = nn.Module()
    model.pool = nn.Module()
    sn = nn.utils.parametrizations.spectral_norm
    model.pool.mlp = nn.Sequential(sn(nn.Linear(d, hidden)), nn.Tanh(), sn(nn.Linear(hidden, 1)))
    model.pool.sm_layer = nn.Module()
    model.pool.sm_layer.raw_alpha = nn.Parameter(torch.tensor(math.log(alpha / (1 - alpha))))
    model.clf = nn.Linear(d, 1)
    return model


def _row_sm(x: torch.Tensor, alpha: float, steps: int) -> torch.Tensor:
    """G_0 = X, G_t = (1 - alpha) X + alpha D^-1 A G_{t-1} on a chain of len(x) nodes (A formed explicitly)."""
    s = len(x)
    a = torch.zeros(s, s)
    idx = torch.arange(s - 1)
    a[idx, idx + 1] = a[idx + 1, idx] = 1.0
    a = a / a.sum(1, keepdim=True).clamp_min(1e-20)
    g = x
    for _ in range(steps):
        g = (1 - alpha) * x + alpha * a @ g
    return g


@pytest.mark.skipif(
    "adjacency" not in inspect.signature(SmAPMIL.__init__).parameters, reason="SmAPMIL has no adjacency option"
)
def test_smap_mapping_copies_spectral_norm_state_and_gives_the_standin_outputs(bench):
    torch.manual_seed(0)
    d, hidden, alpha = 12, 5, 0.3
    theirs = _smap_standin(d, hidden, alpha)
    ours = build_mil_network("smap", d, hidden=hidden, pool_smoothed=True, adjacency="row")
    state = bench.map_official_state("smap", theirs.state_dict(), ours.state_dict())
    ours.load_state_dict(state)
    for ours_name, their_module in (("attention_v", theirs.pool.mlp[0]), ("attention_w", theirs.pool.mlp[2])):
        mine = getattr(ours, ours_name).parametrizations.weight[0]
        assert torch.equal(mine._u, their_module.parametrizations.weight[0]._u)
        assert torch.equal(mine._v, their_module.parametrizations.weight[0]._v)
    assert float(ours.alpha.detach()) == pytest.approx(alpha, abs=1e-7)
    bags = _bags(3, (6, 2, 9), d)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        expected = []
        for x in bags:  # early Sm on the features, ABMIL on the smoothed features, pooled smoothed features
            g = _row_sm(x, alpha, 10)
            a = torch.softmax(theirs.pool.mlp(g).squeeze(-1), dim=0)
            expected.append(theirs.clf((a[:, None] * g).sum(0)).squeeze())
        out = ours(*_padded(bags))
    torch.testing.assert_close(out.logits, torch.stack(expected), atol=1e-5, rtol=0)


def test_official_key_rules(bench):
    assert bench.official_key("abmil", "pool.mlp.2.bias") == "attention_w.bias"
    assert bench.official_key("smap", "pool.sm_layer.raw_alpha") == "alpha_logit"
    assert (
        bench.official_key("smap", "pool.mlp.0.parametrizations.weight.0._v")
        == "attention_v.parametrizations.weight.0._v"
    )
    assert bench.official_key("transmil", "pool.layer1.attn.in_proj_bias") == "layers.0.qkv.bias"
    assert bench.official_key("transmil", "pool.layer2.attn.out_proj.weight") == "layers.1.proj.weight"
    assert bench.official_key("transmil", "pool.pos_layer.proj3.conv.bias") == "ppeg.conv7.bias"
    with pytest.raises(ValueError, match="kind must be one of"):
        bench.official_key("gated", "clf.weight")
    with pytest.raises(KeyError, match="no mapping for official abmil key 'pool.extra.weight'"):
        bench.official_key("abmil", "pool.extra.weight")


def test_map_official_state_rejects_incomplete_or_misfit_states(bench):
    ours = build_mil_network("abmil", 12, hidden=5).state_dict()
    theirs = _abmil_standin(12, 5).state_dict()
    partial = {k: v for k, v in theirs.items() if k != "clf.bias"}
    with pytest.raises(KeyError, match=r"without an official value: \['classifier.bias'\]"):
        bench.map_official_state("abmil", partial, ours)
    wrong = dict(theirs, **{"pool.mlp.0.weight": torch.zeros(6, 12)})
    with pytest.raises(ValueError, match=r"'pool.mlp.0.weight' \(6, 12\) does not fit 'attention_v.weight' \(5, 12\)"):
        bench.map_official_state("abmil", wrong, ours)
    gated = build_mil_network("abmil_gated", 12, hidden=5).state_dict()
    with pytest.raises(KeyError, match="attention_u"):
        bench.map_official_state("abmil", theirs, gated)


# ---------------------------------------------------------------------------------------------- data and helpers
def test_both_sides_get_the_same_bags(bench):
    bags = bench.shifted_mean_bags(5, 3, 8, 6, dim=10)
    again = bench.shifted_mean_bags(5, 3, 8, 6, dim=10)
    assert all(torch.equal(a.x, b.x) and a.label == b.label for a, b in zip(bags, again, strict=True))
    assert all(3 <= len(b.x) <= 8 and b.x.dtype == torch.float32 for b in bags)
    theirs, ours = bench.official_items(bags), bench.our_items(bags, offset=10)
    assert [t[1] for t in theirs] == [len(b.x) for b in bags]
    assert all(t[2].shape == (1,) and float(t[2]) == b.label for t, b in zip(theirs, bags, strict=True))
    batch = collate_bags(ours)
    valid = batch[BagKeys.EMBEDDINGS][batch[BagKeys.MASK]]
    assert torch.equal(valid, torch.cat([t[0] for t in theirs]))
    assert batch[BagKeys.INDEX].tolist() == list(range(10, 16))
    with pytest.raises(ValueError, match="1 <= low <= high"):
        bench.shifted_mean_bags(0, 5, 4, 2)


def test_shifted_mean_positives_carry_the_shift(bench):
    bags = bench.shifted_mean_bags(0, 40, 40, 200, dim=4, window=12)
    pos = torch.stack([b.x[:, 0].mean() for b in bags if b.label == 1]).mean()
    neg = torch.stack([b.x[:, 0].mean() for b in bags if b.label == 0]).mean()
    assert float(pos - neg) == pytest.approx(12 / 40, abs=0.06)  # +1 on 12 of 40 slices


def test_attention_helpers(bench):
    blocks = [torch.tensor([[0.2, 0.1], [0.6, 0.3]]), torch.tensor([[0.5, 0.9]])]
    expected = torch.tensor([[0.25, 0.25], [0.75, 0.75], [1.0, 1.0]])
    torch.testing.assert_close(bench.renormalise(blocks), expected)
    padded = torch.tensor([[[1.0], [2.0], [0.0]], [[3.0], [0.0], [0.0]]])
    assert bench.packed_attention(padded, [2, 1]).tolist() == [[1.0], [2.0], [3.0]]
    packed = torch.arange(6.0).view(3, 2)
    parts = bench.split_official_attention(packed, [2, 1])
    assert [p.tolist() for p in parts] == [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0]]]


def test_median_ratio(bench):
    assert bench.median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 1.0]) == 3.0
    with pytest.raises(ValueError, match="equal, non-empty"):
        bench.median_ratio([1.0], [1.0, 2.0])


# ---------------------------------------------------------------------------------------------- report
def _results() -> dict:
    def timing(model: str, regime: str, threads: int, train: float, ev: float) -> dict:
        return {
            "model": model,
            "regime": regime,
            "threads": threads,
            "train_ratio": train,
            "eval_ratio": ev,
            "ours_train_bags_per_s": 200.0,
            "theirs_train_bags_per_s": 100.0,
            "ours_eval_bags_per_s": 400.0,
            "theirs_eval_bags_per_s": 250.0,
            "collate_share": 0.031,
            "their_collate_share": 0.004,
        }

    check = {
        "model": "ABMIL",
        "regime": "20-60",
        "max_abs_logit_diff": 9e-8,
        "attention_renormalised": False,
        "max_abs_attention_diff": 1.5e-8,
        "loss_theirs": 0.678088,
        "loss_ours": 0.678088,
        "loss_defined_alike": True,
        "abs_loss_diff": 6e-8,
        "max_abs_grad_diff": 1.3e-8,
        "max_abs_grad": 0.1,
    }
    ng = dict(check, model="TransMIL+NG", attention_renormalised=True, loss_defined_alike=False, loss_theirs=0.9)
    ng.update(loss_theirs_renormalised=0.878522, abs_loss_diff_renormalised=6e-8)
    del ng["abs_loss_diff"], ng["max_abs_grad_diff"], ng["max_abs_grad"]
    flops = {"ours_train_gflops": 70.0, "matmul_gflops": 100.0, "train_matmul_fraction": 0.7}
    return {
        "rounds": 3,
        "batches": 2,
        "regimes": {"20-60": {"mean_length": 40.2}, "100-300": {"mean_length": 201.0}},
        "timings": [
            timing("ABMIL", "20-60", 1, 0.7, 1.6),
            timing("ABMIL", "100-300", 1, 2.0, 1.5),
            timing("TransMIL+NG", "20-60", 1, 2.4, 2.0) | flops,
        ],
        "checks": [check, ng],
        "notes": ["a note"],
        "machine": {"cpu": "CPU", "nproc": 2, "torch": "2", "python": "3", "loadavg_start": (1.0, 2.0, 3.0)},
        "command": "python3 benchmarks/bench_official.py --official-src /x",
        "device": "cpu",
    }


def test_markdown_table(bench):
    lines = bench.markdown(_results()).splitlines()
    assert lines[2] == (
        "| model | 20–60 slices (mean 40), 1 thread: train / eval | 100–300 slices (mean 201), 1 thread: train / eval |"
    )
    assert lines[3] == "|---|---|---|"
    assert lines[4] == "| ABMIL | **0.70** / 1.60 | 2.00 / 1.50 |"  # bold: below the 1.5x goal
    assert lines[5] == "| TransMIL+NG | 2.40 / 2.00 | – |"
    assert "| TransMIL+NG | 20-60 | 1 | 200 / 100 | 400 / 250 | 3.1 % | 0.4 % | 70.0 (70% of 100) |" in lines
    assert "| ABMIL | 20-60 | 9.0e-08 | 1.5e-08 | 0.678088 / 0.678088 | 6.0e-08 | 1.3e-08 (1.0e-01) |" in lines
    transmil = next(line for line in lines if line.startswith("| TransMIL+NG | 20-60 | 9.0e-08"))
    assert "(theirs renormalised)" in transmil and "theirs on renormalised attention 0.878522: 6.0e-08" in transmil
    assert lines[-1] == "- a note"


def test_docs_section_and_rewrite(bench):
    results = _results()
    body = bench.docs_section(results, "TABLE")
    assert "Load average at the start 1.00, 2.00, 3.00" in body
    assert "Command: `python3 benchmarks/bench_official.py --official-src /x`" in body
    assert body.endswith("TABLE")
    assert "allocator" not in body
    retained = bench.docs_section(dict(results, retain_freed_memory=True), "TABLE")
    assert "device cpu; glibc allocator keeping freed memory (both sides). Load average" in retained
    begin, end = bench.DOCS_BEGIN, bench.DOCS_END
    text = f"# Doc\n\nbefore\n{begin}\nold\nlines\n{end}\nafter\n"
    assert bench.rewrite_marked_section(text, "new\n") == f"# Doc\n\nbefore\n{begin}\nnew\n{end}\nafter\n"
    with pytest.raises(ValueError, match="exactly once, found it 0"):
        bench.rewrite_marked_section("no markers", "x")
    with pytest.raises(ValueError, match="exactly once, found it 2"):
        bench.rewrite_marked_section(f"{begin}{begin}{end}", "x")
    with pytest.raises(ValueError, match="comes before"):
        bench.rewrite_marked_section(f"{end}\n{begin}\n", "x")


def test_padded_side_table_and_check(bench):
    results = _results()
    padded = {"padded_train_ratio": 1.2, "padded_eval_ratio": 3.0}
    padded |= {"padded_train_bags_per_s": 400.0, "padded_eval_bags_per_s": 320.0}
    results["timings"][0] |= padded
    results["checks"][0]["max_abs_logit_diff_padded"] = 2e-8
    lines = bench.markdown(results).splitlines()
    # train: 1.2 below the goal (bold); packed / padded = 200 / 400 and 400 / 320
    assert "| ABMIL | 20-60 | 1 | **1.20** / 3.00 | 400 / 320 | 0.50 / 1.25 |" in lines
    assert sum(line.startswith("| ABMIL | 20-60 | 1 | **1.20**") for line in lines) == 1  # only the row that has it
    assert any(line.startswith("| ABMIL | 20-60 | 9.0e-08 (ours packed vs padded: 2.0e-08) |") for line in lines)
    assert not any("packed / padded" in line for line in bench.markdown(_results()).splitlines())


def test_docs_markers_by_device(bench):
    cpu, cuda = bench.torch.device("cpu"), bench.torch.device("cuda")
    assert bench.docs_markers(cpu, False) == (bench.DOCS_BEGIN, bench.DOCS_END)
    assert bench.docs_markers(cpu, True) == (bench.DOCS_RETAINED_BEGIN, bench.DOCS_RETAINED_END)
    assert (
        bench.docs_markers(cuda, False)
        == bench.docs_markers(cuda, True)
        == (bench.DOCS_CUDA_BEGIN, bench.DOCS_CUDA_END)
    )


def test_our_padded_side_runs_the_padded_grid(bench):
    spec = bench.ModelSpec("ABMIL", "abmil", False)
    device = bench.torch.device("cpu")
    ours = bench.OurSide(spec, device, None, 1e-3)
    padded = bench.OurSide(spec, device, None, 1e-3, packed=False)
    assert ours.network.packed == "auto" and padded.network.packed is False
    padded.network.load_state_dict(ours.network.state_dict())
    items = bench.our_items(bench.shifted_mean_bags(3, 4, 9, 5))
    assert bench.padded_logit_diff(ours, padded, items) < 1e-6
    bench.torch.nn.init.normal_(padded.network.classifier.weight)  # other weights: the check must see it
    assert bench.padded_logit_diff(ours, padded, items) > 1e-3


def test_performance_doc_has_the_markers(bench):
    text = (REPO / "docs" / "performance.md").read_text()
    pairs = [(bench.DOCS_BEGIN, bench.DOCS_END), (bench.DOCS_RETAINED_BEGIN, bench.DOCS_RETAINED_END)]
    for begin, end in pairs + [(bench.DOCS_CUDA_BEGIN, bench.DOCS_CUDA_END)]:
        assert text.count(begin) == 1 and text.count(end) == 1
        assert text.index(begin) < text.index(end)
    assert bench.parse_args(["--retain-freed-memory"]).retain_freed_memory is True
    assert bench.parse_args([]).retain_freed_memory is False
