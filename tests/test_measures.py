"""neuralgrok.measures against closed forms, hand computations and synthetic runs."""
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuralgrok
from neuralgrok import measures

GAPS = ["reference", "all", "cyclic"]


def circle_embedding(p, k, radius, vocab=None):
    """e_t = r (cos 2 pi k t / p, sin 2 pi k t / p), padded with extra (non-number) rows."""
    t = torch.arange(vocab or p, dtype=torch.float64)
    angle = 2 * math.pi * k * t / p
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def addition_cosines(p, keys, scale=1.0):
    """L[a, b, c] = scale * sum_k cos(w_k (a + b - c))."""
    r = torch.arange(p, dtype=torch.float64)
    s = r[:, None, None] + r[None, :, None] - r[None, None, :]
    return scale * sum(torch.cos(2 * math.pi * k * s / p) for k in keys)


# --- MED ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gaps", GAPS)
def test_med_of_a_circle_is_the_chord(gaps):
    p, k, radius = 31, 5, 1.7
    result = measures.med(circle_embedding(p, k, radius, vocab=p + 1), p, gaps=gaps)
    chord = 2 * radius * math.sin(math.pi * k / p)
    assert result.value == pytest.approx(chord, rel=1e-12)
    assert result.per_range == pytest.approx((chord, chord), rel=1e-12)
    assert result.cv == pytest.approx((0, 0), abs=1e-12)
    assert len(result.gap_distances[0]) == {"reference": p - 2, "all": p - 1, "cyclic": p}[gaps]


def test_med_combinations_and_gaps_by_hand():
    # 1-d embedding, p = 4; first operand ids 0..3 at 0, 1, 3, 6 (gaps 1, 2, 3; wrap 6),
    # second operand ids 4..7 at 10, 12, 14, 16 (gaps 2, 2, 2; wrap 6).
    embedding = torch.tensor([0.0, 1, 3, 6, 10, 12, 14, 16])[:, None]
    d1 = {"reference": 1.5, "all": 2.0, "cyclic": 3.0}
    d2 = {"reference": 2.0, "all": 2.0, "cyclic": 3.0}
    for gaps in GAPS:
        want_sum = d1[gaps] + d2[gaps]
        for combine, want in [("mean", want_sum / 2), ("sum", want_sum), ("scaled_sum", 3 * want_sum)]:
            result = measures.med(embedding, 4, ranges=(0, 4), gaps=gaps, combine=combine)
            assert result.value == pytest.approx(want)
            assert result.per_range == pytest.approx((d1[gaps], d2[gaps]))
    reference = measures.med(embedding, 4, ranges=(0, 4))
    assert reference.gap_distances[0].tolist() == [1.0, 2.0]
    assert reference.cv[1] == 0.0
    # Explicit ids in any order name the same rows as offsets.
    explicit = measures.med(embedding, 4, ranges=([0, 1, 2, 3], torch.tensor([4, 5, 6, 7])))
    assert explicit.value == reference.value


def test_med_options_are_checked():
    embedding = torch.randn(10, 4)
    with pytest.raises(ValueError, match="gaps"):
        measures.med(embedding, 5, gaps="last")
    with pytest.raises(ValueError, match="combine"):
        measures.med(embedding, 5, combine="max")
    with pytest.raises(ValueError, match="outside"):
        measures.med(embedding, 5, ranges=(0, 6))
    with pytest.raises(ValueError, match="p = 5 ids"):
        measures.med(embedding, 5, ranges=([0, 1, 2],))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_med_at_gaussian_init_is_sqrt2(seed):
    # ||e - e'||^2 ~ (2 / d) chi^2_d, so a gap averages sqrt(2)(1 - 1/(4d)) with relative spread
    # 1 / sqrt(2d); 95 gaps make the mean's spread ~0.01. A wrong scale (1/sqrt(2), 2, 16) fails.
    p, d = 97, 128
    embedding = torch.randn(p + 1, d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d)
    result = measures.med(embedding, p)
    assert result.value == pytest.approx(math.sqrt(2), abs=0.04)
    assert 0.04 < result.cv[0] < 0.09  # ~ 1 / sqrt(2 d) = 0.0625


def test_hidden_layer_med_from_a_callable_and_from_activations():
    p, k, radius = 13, 2, 0.5
    circle = circle_embedding(p, k, radius)
    inputs = measures.diagonal_inputs(p, equals_id=p, second_offset=20)
    assert inputs[4].tolist() == [4, 24, p]
    first_layer = lambda x: circle[x[:, 0]]  # noqa: E731  (stands in for a network's first hidden layer)
    from_callable = measures.hidden_layer_med(first_layer, inputs, gaps="cyclic", combine="scaled_sum")
    assert from_callable.value == pytest.approx((p - 1) * 2 * radius * math.sin(math.pi * k / p), rel=1e-12)
    from_tensor = measures.hidden_layer_med(circle[:, None, :], gaps="cyclic")  # extra dims are flattened
    assert from_tensor.value == pytest.approx(from_callable.value / (p - 1), rel=1e-12)
    with pytest.raises(ValueError, match="needs the inputs"):
        measures.hidden_layer_med(first_layer)


# --- weight norm, AGE ---------------------------------------------------------------------------


def small_net():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.Linear(2, 1, bias=False)))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))  # 1 + 4 + 0.25 = 5.25
        net[0].bias.copy_(torch.tensor([3.0, -1.0]))  # 10
        net[2][0].weight.copy_(torch.tensor([[2.0, 0.1]]))  # 4.01
    return net


def test_weight_norm_by_hand():
    net = small_net()
    assert measures.squared_weight_norm(net) == pytest.approx(19.26, rel=1e-6)
    assert measures.weight_norm(net) == pytest.approx(19.26 ** 0.5, rel=1e-6)  # metrics.csv's weight_norm
    assert measures.squared_weight_norm_per_parameter(net) == pytest.approx(
        {"0.weight": 5.25, "0.bias": 10.0, "2.0.weight": 4.01}, rel=1e-6)
    assert measures.squared_weight_norm_per_module(net) == pytest.approx({"0": 15.25, "2.0": 4.01}, rel=1e-6)
    assert measures.squared_weight_norm_per_module(net, depth=1) == pytest.approx({"0": 15.25, "2": 4.01}, rel=1e-6)


def test_weight_norm_with_mixed_dtypes():
    net = small_net()
    net[0].double()  # mixed float32 / float64 parameters take the per-tensor path
    assert measures.squared_weight_norm(net) == pytest.approx(19.26, rel=1e-6)


def test_group_by_module_puts_root_parameters_under_empty_name():
    grouped = measures.group_by_module({"scale": 1.0, "a.b.w": 2.0, "a.b.v": 3.0, "a.c.w": torch.tensor(4.0)})
    assert grouped == {"": 1.0, "a.b": 5.0, "a.c": 4.0}
    assert measures.group_by_module({"a.b.w": 2.0, "a.c.w": 4.0}, depth=1) == {"a": 6.0}


@pytest.mark.parametrize("kind", ["grad", "weight"])
def test_per_layer_age_sums_to_global_age(kind):
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, dim_feedforward=32), num_layers=2)
    model(torch.randn(3, 5, 16)).pow(2).mean().backward()
    age = measures.gradient_age if kind == "grad" else measures.weight_age
    per_layer = age(model, per_layer=True, depth=2)
    assert set(per_layer) == {"layers.0", "layers.1"}
    total = age(model)
    assert total == pytest.approx(neuralgrok.age(model, of=kind).item(), rel=1e-12)
    assert sum(per_layer.values()) == pytest.approx(total, rel=1e-5)
    assert sum(age(model, per_layer=True).values()) == pytest.approx(total, rel=1e-5)


# --- Gini ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 10, 97])
def test_gini_extremes(n):
    assert measures.gini(torch.eye(n)[n // 2]) == pytest.approx((n - 1) / n, abs=1e-12)
    assert measures.gini(torch.full((n,), 0.3)) == pytest.approx(0.0, abs=1e-12)


def test_gini_by_hand():
    # sum_ij |x_i - x_j| = 2 (1 + 2 + 3 + 1 + 2 + 1) = 20; / (2 * 4 * 10) = 0.25
    assert measures.gini([4.0, 1.0, 3.0, 2.0]) == pytest.approx(0.25, abs=1e-12)
    assert measures.gini([0.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        measures.gini([1.0, -1.0])


# --- Fourier measures ---------------------------------------------------------------------------


def test_fourier_basis_is_orthonormal_and_ordered():
    p = 11
    basis = measures.fourier_basis(p)
    torch.testing.assert_close(basis @ basis.T, torch.eye(p, dtype=torch.float64))
    x = torch.arange(p, dtype=torch.float64)
    torch.testing.assert_close(basis[5], torch.cos(2 * math.pi * 3 * x / p) * math.sqrt(2 / p))
    torch.testing.assert_close(basis[6], torch.sin(2 * math.pi * 3 * x / p) * math.sqrt(2 / p))
    with pytest.raises(ValueError, match="odd"):
        measures.fourier_basis(10)


def synthetic_embedding(p, d, keys, noise, seed=0):
    """Number rows sum_k cos(w_k t) u_k + sin(w_k t) v_k (+ noise), then an '=' row."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(p, dtype=torch.float64)[:, None]
    rows = noise * torch.randn(p, d, generator=g, dtype=torch.float64)
    for k in keys:
        u, v = torch.randn(2, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        rows += torch.cos(2 * math.pi * k * t / p) * u + torch.sin(2 * math.pi * k * t / p) * v
    return torch.cat([rows, torch.randn(1, d, generator=g, dtype=torch.float64)]).float()


def test_key_frequencies_are_recovered_from_a_synthetic_embedding():
    p, d, keys = 97, 128, [3, 17, 40]
    embedding = synthetic_embedding(p, d, keys, noise=0.02)
    norms = measures.fourier_norms(embedding, p)
    assert norms.shape == ((p + 1) // 2,)
    # Parseval: the basis is orthonormal.
    assert norms.pow(2).sum().item() == pytest.approx(embedding[:p].double().pow(2).sum().item(), rel=1e-5)
    assert measures.key_frequencies(norms) == keys
    assert measures.key_frequencies(norms, top_k=3) == keys
    # 3 of 48 frequencies carry the signal; the noise still spreads some norm over the other 45.
    assert measures.fourier_gini(embedding, p) > 0.5

    # A shifted token range finds the same frequencies.
    shifted = torch.cat([torch.randn(5, d), embedding])
    assert measures.key_frequencies(measures.fourier_norms(shifted, p, token_range=5)) == keys


def test_no_key_frequencies_at_init():
    p, d = 97, 128
    embedding = torch.randn(p + 1, d, generator=torch.Generator().manual_seed(0)) / math.sqrt(d)
    norms = measures.fourier_norms(embedding, p)
    assert measures.key_frequencies(norms) == []
    assert measures.fourier_gini(embedding, p) < 0.06  # ~0.024: the 48 norms differ by chi noise only


def test_fourier_gini_of_a_neuron_logit_map():
    # W_L (p, d_mlp): every neuron reads one of two frequencies.
    p, keys = 23, [2, 7]
    w_l = synthetic_embedding(p, 64, keys, noise=0.0)[:p]
    assert measures.key_frequencies(measures.fourier_norms(w_l, p)) == keys
    assert measures.fourier_gini(w_l, p) == pytest.approx(measures.gini([0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]), abs=0.05)


def test_restricted_and_excluded_loss_on_an_exact_fourier_table():
    p, keys = 97, [3, 17, 40]
    logits = addition_cosines(p, keys, scale=4.0)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    full_loss = nn.functional.cross_entropy(logits[a.reshape(-1), b.reshape(-1)], (a + b).reshape(-1) % p).item()
    assert full_loss < 3.0  # well below log p: the table does solve the task
    assert measures.restricted_loss(logits, keys) == pytest.approx(full_loss, rel=1e-10)
    train = torch.randint(0, p, (500, 2), generator=torch.Generator().manual_seed(0))
    assert measures.excluded_loss(logits, keys, train) == pytest.approx(math.log(p), rel=1e-10)
    # The (p^2, p) layout, row a * p + b, is the same table.
    assert measures.restricted_loss(logits.reshape(p * p, p), keys) == pytest.approx(full_loss, rel=1e-10)
    # Keeping the wrong frequencies keeps nothing.
    assert measures.restricted_loss(logits, [5, 6]) == pytest.approx(math.log(p), rel=1e-10)


def test_key_frequency_projection_is_orthogonal_and_ignores_input_free_patterns():
    p, keys = 11, [2, 4]
    logits = torch.randn(p, p, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kept = measures.key_frequency_logits(logits, keys)
    torch.testing.assert_close(measures.key_frequency_logits(kept, keys), kept)  # idempotent
    assert torch.sum(kept * (logits - kept)).abs().item() < 1e-9  # orthogonal residual
    # A frequency-2 pattern over the answers that ignores the inputs is not an a + b - c direction.
    c = torch.arange(p, dtype=torch.float64)
    answers_only = torch.cos(2 * math.pi * 2 * c / p).expand(p, p, p)
    assert measures.key_frequency_logits(answers_only, keys).abs().max().item() < 1e-12
    # A phase-shifted key-frequency logit is kept whole.
    r = torch.arange(p, dtype=torch.float64)
    shifted = torch.sin(2 * math.pi * 4 * (r[:, None, None] + r[None, :, None] - r[None, None, :]) / p + 0.3)
    torch.testing.assert_close(measures.key_frequency_logits(shifted, keys), shifted)
    with pytest.raises(ValueError, match="outside"):
        measures.key_frequency_logits(logits, [6])


def test_logit_table_from_a_model_callable():
    p, keys = 7, [1, 3]
    table = addition_cosines(p, keys)
    inputs = measures.all_pair_inputs(p, equals_id=p, second_offset=p + 1)
    assert inputs[3 * p + 5].tolist() == [3, 5 + p + 1, p]

    def model(x):  # (batch, sequence, vocab) logits with an extra '=' class, read at the last position
        logits = torch.zeros(len(x), 3, p + 1)
        logits[:, -1, :p] = table[x[:, 0], x[:, 1] - (p + 1)].float()
        return logits

    torch.testing.assert_close(measures.logit_table(model, inputs, p), table, rtol=1e-6, atol=1e-6)

    # The same table from evaluation logits of a shuffled train/test split.
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))
    train, test = order[:20], order[20:]
    pairs = torch.cat([inputs[train], inputs[test]])[:, :2] - torch.tensor([0, p + 1])
    logits = torch.cat([model(inputs[train]), model(inputs[test])])
    torch.testing.assert_close(measures.assemble_logit_table(pairs, logits, p), table, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="exactly once"):
        measures.assemble_logit_table(torch.cat([pairs[:-1], pairs[:1]]), logits, p)


# --- analyze ------------------------------------------------------------------------------------


def synthetic_run():
    steps = np.arange(0, 1000, 10)
    test_loss = 5.0 / (1 + np.exp((steps - 550) / 40.0)) + 0.01
    return pd.DataFrame({
        "step": steps,
        "test_loss": test_loss,
        "test_accuracy": np.where(steps >= 600, 0.99, 0.02),  # grokking step 600
        "monotone": 3.0 * np.exp(test_loss),  # increasing in test loss: Spearman 1
        "drops_at_300": np.where(steps < 300, 5.0, 1.0) - 1e-4 * steps,
        "constant": np.ones(len(steps)),
    }).sample(frac=1.0, random_state=0)  # analyze() sorts by step


def test_analyze_correlations_and_drop_lag(tmp_path):
    table = synthetic_run()
    result = measures.analyze(table).set_index("measure")
    assert list(result.index) == ["monotone", "drops_at_300", "constant"]
    assert result.loc["monotone", "spearman"] == pytest.approx(1.0)
    assert result.loc["monotone", "pearson"] > 0.9
    assert result.loc["monotone", "pearson_log"] > 0.5
    assert result.loc["drops_at_300", "drop_step"] == 300
    assert result.loc["drops_at_300", "drop_size"] == pytest.approx(4.001)
    assert result.loc["drops_at_300", "grok_step"] == 600
    assert result.loc["drops_at_300", "lag"] == 300
    assert np.isnan(result.loc["constant", "pearson"]) and np.isnan(result.loc["constant", "spearman"])

    # From a CSV path, and written back.
    csv = tmp_path / "metrics.csv"
    table.to_csv(csv, index=False)
    from_csv = measures.analyze(csv, measures=["monotone"], grok_accuracy=0.5)
    assert list(from_csv["measure"]) == ["monotone"] and from_csv.loc[0, "grok_step"] == 600
    written = measures.write_analysis(from_csv, tmp_path / "out" / "analysis.csv")
    pd.testing.assert_frame_equal(pd.read_csv(written), from_csv)


def test_analyze_leaves_out_a_column_that_repeats_an_earlier_one_unless_named():
    # A method that leaves the gradient as it is logs step_grad_age equal to grad_age on every row.
    table = synthetic_run().assign(grad_age=lambda t: t["monotone"], step_grad_age=lambda t: t["monotone"])
    table.loc[table.index[:3], ["monotone", "step_grad_age"]] = np.nan  # NaN in the same rows: still a repeat
    assert list(measures.analyze(table)["measure"]) == ["monotone", "drops_at_300", "constant", "grad_age"]
    table.loc[table.index[5], "step_grad_age"] += 1.0  # differs on one row: kept
    assert "step_grad_age" in list(measures.analyze(table)["measure"])
    named = measures.analyze(table.assign(step_grad_age=table["grad_age"]), measures=["grad_age", "step_grad_age"])
    assert list(named["measure"]) == ["grad_age", "step_grad_age"]


def test_analyze_smoothing_ignores_a_one_sample_dip_and_no_grokking_gives_nan():
    table = synthetic_run()
    table["test_accuracy"] = 0.0
    steps = table["step"].to_numpy()
    dip = np.where(steps < 300, 5.0, 2.0)  # the real drop, 3
    dip[steps == 700] = -10.0  # one bad sample: a raw drop of 12
    table["dip"] = dip
    raw = measures.analyze(table, measures=["dip"]).iloc[0]
    smoothed = measures.analyze(table, measures=["dip"], smooth=9).iloc[0]
    assert raw["drop_step"] == 700
    assert smoothed["drop_step"] == 300 and smoothed["drop_size"] == pytest.approx(3.0)
    assert np.isnan(smoothed["grok_step"]) and np.isnan(smoothed["lag"])


def test_change_point_finds_a_level_shift_in_either_direction():
    steps = np.arange(0, 1000, 10)
    assert measures.change_point(steps, np.where(steps < 370, 2.0, -1.0)) == 370
    assert measures.change_point(steps, np.where(steps < 370, -1.0, 2.0) + 0.01 * np.sin(steps)) == 370
    ramp = 1 / (1 + np.exp(-(steps - 600) / 20.0))  # a smooth rise centred at 600
    assert measures.change_point(steps, ramp) in (600, 610)
    with_nan = np.where(steps < 500, 0.0, 1.0)
    with_nan[[3, 70]] = np.nan
    assert measures.change_point(steps, with_nan) == 500
    assert np.isnan(measures.change_point(steps, np.ones(len(steps))))
    assert np.isnan(measures.change_point(steps[:1], np.ones(1)))


GROK_AT = 4000  # where each synthetic run's test accuracy jumps (test loss falls)


def sigmoid(steps, centre, width=30.0):
    return 1 / (1 + np.exp(-np.clip((steps - centre) / width, -50, 50)))


def write_synthetic_run(directory, seed, lead, lag, groks=True):
    """A run directory as the runner leaves it (config.toml, metrics.csv, summary.json) whose ``med`` is the
    test loss ``lead`` steps ahead (it falls ``lead`` steps before the test-accuracy jump) and whose
    ``fourier_gini`` rises ``lag`` steps after the jump."""
    from neuralgrok.experiments.config import TrainConfig
    from neuralgrok.experiments.records import METRIC_COLUMNS, metrics_csv, summarize
    from neuralgrok.storage.files import atomic_write_text, strict_json, to_toml

    config = TrainConfig(task="a+b", p=97, steps=6000, eval_every=20, seed=seed, measures="med,fourier_gini")
    steps = np.arange(0, config.steps + 1, config.eval_every)
    noise = np.random.default_rng(seed).normal(size=len(steps))
    test_accuracy = 0.01 + 0.98 * sigmoid(steps, GROK_AT) if groks else np.full(len(steps), 0.1)

    def test_loss_at(at):  # falling at the jump, and slowly throughout (so that no two steps tie)
        return (4.6 * (1 - sigmoid(at, GROK_AT)) if groks else 4.0) + 0.01 * (2 - at / config.steps)

    columns = {"step": steps, "train_loss": 0.01 + np.exp(-steps / 200), "train_accuracy": np.minimum(1.0, steps / 1000),
               "test_loss": test_loss_at(steps), "test_accuracy": test_accuracy,
               "grad_age": 300 + noise, "step_grad_age": 300 + noise, "weight_norm": 60 - steps / 1000,
               "wall_time_s": steps * 0.5, "med": 0.2 + 0.3 * test_loss_at(steps + lead),
               "fourier_gini": 0.1 + 0.5 * sigmoid(steps, GROK_AT + lag, 60.0) + 0.001 * noise}
    history = [{column: float(columns[column][i]) if column != "step" else int(steps[i])
                for column in (*METRIC_COLUMNS, "med", "fourier_gini")} for i in range(len(steps))]
    directory.mkdir(parents=True)
    atomic_write_text(directory / "config.toml", to_toml(config.to_dict()))
    atomic_write_text(directory / "metrics.csv", metrics_csv(history))
    atomic_write_text(directory / "summary.json", strict_json(summarize(config, history, history[-1]["wall_time_s"])))


def test_analyze_of_a_sweep_reports_each_measures_lead_on_the_test_accuracy_jump(tmp_path, capsys):
    from neuralgrok.experiments import cli

    sweep = tmp_path / "sweep"
    write_synthetic_run(sweep / "seed=0", 0, lead=600, lag=400)
    write_synthetic_run(sweep / "seed=1", 1, lead=300, lag=200)
    write_synthetic_run(sweep / "seed=2", 2, lead=300, lag=200, groks=False)  # a capped hold-out: no jump
    assert cli.main(["analyze", str(sweep)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(sweep / "correlations.csv").set_index(["run", "measure"])
    # step_grad_age repeats grad_age in these baseline runs: left out
    assert set(table.index.get_level_values("measure")) == {"grad_age", "weight_norm", "med", "fourier_gini"}
    for run, lead, lag in (("seed=0", 600, 400), ("seed=1", 300, 200)):
        assert table.loc[(run, "med"), "jump_step"] in (GROK_AT, GROK_AT + 20)  # the half-way sample's side
        assert table.loc[(run, "med"), "lead"] == lead
        assert abs(table.loc[(run, "fourier_gini"), "lead"] + lag) <= 20  # a lag: negative, within one eval
        # MED tracks the test loss: rank correlation 1 over the run and over memorisation -> grokking.
        assert table.loc[(run, "med"), "spearman"] == pytest.approx(1.0)
        assert table.loc[(run, "med"), "spearman_window"] == pytest.approx(1.0)
        assert table.loc[(run, "weight_norm"), "spearman"] == pytest.approx(1.0)  # both fall throughout
        assert table.loc[(run, "med"), "memorisation_step"] == 1000
    assert np.isnan(table.loc[("seed=2", "med"), "jump_step"]) and np.isnan(table.loc[("seed=2", "med"), "lead"])
    assert printed.splitlines()[0].split()[:3] == ["run", "measure", "spearman"]
    assert "600" in next(line for line in printed.splitlines() if line.startswith("seed=0") and " med " in line)
    # A directory that holds no runs is an error naming it.
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["analyze", str(tmp_path / "empty")])
    assert exit_info.value.code == 2 and "holds no runs" in capsys.readouterr().err


def test_analyze_needs_the_standard_columns():
    with pytest.raises(ValueError, match="test_accuracy"):
        measures.analyze(pd.DataFrame({"step": [0], "test_loss": [1.0]}))


def test_spearman_without_scipy_matches_scipy(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 40).astype(float)  # many ties
    y = x + rng.normal(size=40)
    with_scipy = measures.analysis._spearman(x, y)
    monkeypatch.setitem(sys.modules, "scipy", None)  # makes `from scipy import stats` raise ImportError
    without_scipy = measures.analysis._spearman(x, y)
    assert without_scipy == pytest.approx(with_scipy, rel=1e-12)
    assert measures.analysis._average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_runner_columns_that_are_not_measures_exist_in_metrics_csv():
    from neuralgrok.experiments.records import METRIC_COLUMNS, part_columns

    logged = {"grad_age", "step_grad_age", "weight_norm"}  # the runner's own measures
    assert set(measures.NOT_MEASURES) == set(METRIC_COLUMNS + tuple(part_columns(("held", "rest")))) - logged
    assert set(METRIC_COLUMNS) - set(measures.NOT_MEASURES) == logged


def test_analyze_command_on_a_real_run(tmp_path):
    run = tmp_path / "run"
    common = ["--task", "a+b", "--p", "11", "--width", "32", "--depth", "1", "--steps", "300", "--lr", "3e-3",
              "--eval-every", "20", "--threads", "1", "--quiet", "--measures", "med,med_cv,fourier_gini",
              "--out", str(run)]
    subprocess.run([sys.executable, "-m", "neuralgrok", "run", *common], check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-m", "neuralgrok", "analyze", str(run)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(run / "analysis.csv")
    # a baseline run's step_grad_age is its grad_age: left out
    assert list(table["measure"]) == ["grad_age", "weight_norm", "med", "med_cv", "fourier_gini"]

    assert table["n"].min() == 16  # steps 0, 20, ..., 300
    assert table[["pearson", "spearman"]].abs().max().max() <= 1.0
    missing = subprocess.run([sys.executable, "-m", "neuralgrok", "analyze", str(tmp_path / "nothing")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_runner_logs_the_requested_measures_of_the_logged_weights():
    from neuralgrok.experiments.config import TrainConfig
    from neuralgrok.experiments.loop import train

    config = TrainConfig(task="a+b", p=11, width=32, depth=1, steps=30, eval_every=10, threads=1,
                         measures="med, fourier_gini")
    result = train(config, progress=False)
    last = result.history[-1]  # the final weights, which result.model holds
    embedding = result.model.token_embedding.weight
    assert last["med"] == pytest.approx(measures.med(embedding, 11).value, rel=1e-12)
    assert last["fourier_gini"] == pytest.approx(measures.fourier_gini(embedding, 11), rel=1e-12)
    assert result.history[0]["med"] != last["med"]
    with pytest.raises(ValueError, match="choose from"):
        TrainConfig(measures="med,fourier")


def test_analyze_finds_a_measure_built_to_lead_test_loss_by_a_known_lag():
    # Train accuracy reaches 1 at step 200, test accuracy 0.95 at step 700; the test loss falls as a
    # logistic centred at step 650. `leads` is the same curve 150 steps earlier, so its largest drop is
    # at 500 (lag 200 before grokking), and within memorisation..grokking both fall together (rho 1);
    # `rises` is its mirror (rho -1); `noise` is unrelated.
    steps = np.arange(0, 1001, 10)
    test_loss = 3.0 / (1 + np.exp((steps - 650) / 15.0)) + 0.01
    leads = 3.0 / (1 + np.exp((steps - 500) / 15.0))
    table = pd.DataFrame({"step": steps, "train_accuracy": np.where(steps >= 200, 1.0, 0.5),
                          "test_accuracy": np.where(steps >= 700, 1.0, 0.1), "test_loss": test_loss,
                          "leads": leads, "rises": -leads,
                          "noise": np.random.default_rng(0).normal(size=len(steps))})
    result = measures.analyze(table).set_index("measure")
    assert result.loc["leads", "drop_step"] == 500 and result.loc["leads", "lag"] == 200
    assert result.loc["leads", "memorisation_step"] == 200 and result.loc["leads", "n_window"] == 51
    assert result.loc["leads", "spearman_window"] == pytest.approx(1.0)
    assert result.loc["rises", "spearman_window"] == pytest.approx(-1.0)
    assert abs(result.loc["noise", "spearman_window"]) < 0.5
    never = measures.analyze(table.assign(test_accuracy=0.1)).set_index("measure")
    assert np.isnan(never.loc["leads", "spearman_window"]) and never.loc["leads", "n_window"] == 0
