"""Nothing silently wrong: each fault or bad input either runs right or is refused with a clear
message, and never corrupts a run directory, a checkpoint or an optimizer's state (issue 14).
bench/fault_suite.py is the long, randomised counterpart (kills, damaged checkpoints, a full disk,
two writers)."""
import copy
import dataclasses
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from neuralgrok import Grokfast, NeuralGrok, measures, ops
from neuralgrok.experiments import cli
from neuralgrok.optim.amplifier import NeuralAmplifier
from neuralgrok.experiments.data import build_data
from neuralgrok.storage.checkpoints import previous_path, read_checkpoint, weights_only_supported, write_checkpoint
from neuralgrok.experiments.compare import group_row, load_runs, stop_reasons_present
from neuralgrok.storage.files import locked_directory
from neuralgrok.optim.normalize import Normalize
from neuralgrok.experiments.sweeps import load_sweep
from neuralgrok.experiments.config import ConfigError, TrainConfig, validate_config
from neuralgrok.experiments.records import stored_config
from neuralgrok.experiments.loop import resume, train
from neuralgrok.experiments.records import CHECKPOINT, RunDirectoryError, run_files
from neuralgrok.optim.base import NonFiniteGradientError

README = Path(__file__).resolve().parent.parent / "README.md"
TINY = dict(task="a+b", p=11, train_fraction=0.5, width=32, depth=1, steps=40, batch_size=16, lr=3e-3,
            weight_decay=0.0, eval_every=5, checkpoint_every=13, threads=1)
TINY_FLAGS = ["--p", "11", "--width", "32", "--depth", "1", "--steps", "40", "--batch-size", "16", "--eval-every", "5",
              "--checkpoint-every", "13", "--threads", "1", "--quiet"]


def cli_exit(capsys, *args):
    """``(exit status, stdout, stderr)`` of an in-process ``neuralgrok`` call."""
    try:
        status = cli.main(list(args))
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return status, out, err


def snapshot(directory):
    """Every file under ``directory`` with its bytes (hidden temporaries too)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def metric_rows(run_dir):
    lines = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("wall_time_s")
    return [",".join(v for i, v in enumerate(line.split(",")) if i != column) for line in lines]


def strict_json(path):
    """A JSON file parsed with NaN and Infinity refused (they are not JSON)."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


# -- run directories that cannot be mixed up ---------------------------------------------------------------
def test_a_new_run_into_a_finished_runs_directory_is_refused_and_changes_nothing(tmp_path, capsys):
    train(TrainConfig(**TINY), tmp_path / "run", progress=False)
    before = snapshot(tmp_path / "run")
    status, _, err = cli_exit(capsys, "run", *TINY_FLAGS, "--method", "grokfast-ema", "--out", str(tmp_path / "run"))
    assert status == 2 and "holds a finished run" in err and "--overwrite" in err
    assert snapshot(tmp_path / "run") == before


def test_overwrite_deletes_the_old_run_first(tmp_path, capsys):
    train(TrainConfig(**dict(TINY, snapshot_every=10), method="neuralgrok-frozen"), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "amplifier.pt").exists() and (tmp_path / "run" / "snapshots").is_dir()
    status, _, _ = cli_exit(capsys, "run", *TINY_FLAGS, "--method", "grokfast-ema", "--checkpoint-every", "0",
                            "--out", str(tmp_path / "run"), "--overwrite")
    assert status == 0
    assert run_files(tmp_path / "run") == ["summary.json", "metrics.csv", "model.pt", "config.toml"]
    assert strict_json(tmp_path / "run" / "summary.json")["method"] == "grokfast-ema"
    assert TrainConfig.from_toml(tmp_path / "run" / "config.toml").method == "grokfast-ema"


def test_an_unfinished_run_of_the_same_config_is_pointed_to_resume(tmp_path):
    config = TrainConfig(**TINY)
    train(config, tmp_path / "run", progress=False)
    (tmp_path / "run" / "summary.json").unlink()
    with pytest.raises(RunDirectoryError, match="--resume"):
        train(config, tmp_path / "run", progress=False)


def test_compare_leaves_out_a_directory_whose_summary_is_another_runs(tmp_path):
    train(TrainConfig(**TINY), tmp_path / "a", progress=False)
    train(TrainConfig(**TINY, method="grokfast-ema"), tmp_path / "mixed", progress=False)
    # What an unguarded second run left: its config.toml beside the first run's summary.json.
    shutil.copy(tmp_path / "a" / "config.toml", tmp_path / "b.toml")
    (tmp_path / "mixed" / "config.toml").write_text((tmp_path / "b.toml").read_text().replace('"baseline"', '"normalize"'))
    warnings = []
    runs = load_runs([tmp_path / "a", tmp_path / "mixed"], warn=warnings.append)
    assert [run.path.name for run in runs] == ["a"] and "differ from config.toml" in warnings[0]


def test_a_second_writer_is_refused_while_a_run_holds_the_directory(tmp_path, capsys):
    with locked_directory(tmp_path / "run"):
        status, _, err = cli_exit(capsys, "run", *TINY_FLAGS, "--out", str(tmp_path / "run"))
    assert status == 2 and "being written by another process" in err
    assert list((tmp_path / "run").iterdir()) == []


# -- divergence ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["baseline", "grokfast-ema", "neuralgrok-frozen"])
def test_a_diverging_run_ends_diverged_in_strict_json_and_exit_3(tmp_path, capsys, method):
    status, out, err = cli_exit(capsys, "run", *TINY_FLAGS, "--optimizer", "sgd", "--lr", "1e30",
                                "--weight-decay", "0", "--method", method, "--out", str(tmp_path))
    assert status == cli.EXIT_DIVERGED, err
    summary = strict_json(tmp_path / "summary.json")
    assert summary["stop_reason"] == "diverged" and summary["diverged_at_step"] <= 5
    assert "not finite" in summary["diverged_because"] and "diverged at step" in err
    # The final weights only where they are finite: never a NaN model. The plain run's weights became NaN (no
    # model.pt); the wrappers refused the non-finite gradient before any update (finite weights, saved).
    saved = tmp_path / "model.pt"
    assert saved.exists() == (method != "baseline")
    if saved.exists():
        assert all(torch.isfinite(w).all() for w in read_checkpoint(saved)["model"].values())
    assert out.splitlines()[2].split()[-2] == "diverged"  # the table's final accuracy cell
    runs = load_runs([tmp_path])  # compare's table counts it as diverged, with no threshold reached
    row = group_row([], (), runs, stop_reasons_present(runs))
    assert row["diverged"] == "1" and row["steps_to_test_50_median"] == ">40"


# -- non-finite and out-of-range values, refused before anything is written ----------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--lr", "inf"], "lr=inf must be a finite number"),
    (["--weight-decay", "nan"], "weight_decay=nan must be a finite number"),
    (["--init-scale", "inf"], "init_scale=inf must be a finite number"),
    (["--method", "grokfast-ema", "--ema-alpha", "2"], "ema_alpha=2.0 must be in [0, 1]"),
    (["--method", "grokfast-ema", "--ema-alpha", "nan"], "ema_alpha=nan must be a finite number"),
    (["--method", "grokfast-ema", "--ema-lamb", "nan"], "ema_lamb=nan must be a finite number"),
    (["--seed", "-1"], "seed=-1 must be in 0..4294967295"),
    (["--method", "neuralgrok", "--outer-fraction", "0.001"], "leaves the outer split empty"),
    (["--device", "cuda:99"], "device='cuda:99' is not available"),
    (["--device", "banana"], "device='banana' is not a torch device"),
    (["--threads", "100000"], "threads=100000 must be in 0..1024"),
])
def test_values_that_would_fail_later_exit_2_naming_the_field_and_write_nothing(tmp_path, capsys, flags, message):
    status, _, err = cli_exit(capsys, "run", *TINY_FLAGS, *flags, "--out", str(tmp_path / "run"))
    assert status == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_non_finite_values_from_a_toml_file_and_the_python_api_are_refused(tmp_path):
    (tmp_path / "x.toml").write_text("lr = inf\n")
    with pytest.raises(ConfigError, match="lr=inf must be a finite number"):
        TrainConfig.from_toml(tmp_path / "x.toml")
    config = TrainConfig(**TINY)
    config.weight_decay = math.nan  # changed after it was built: train() checks again
    with pytest.raises(ConfigError, match="weight_decay=nan"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_sweep_with_one_bad_point_launches_nothing(tmp_path, capsys):
    (tmp_path / "sweep.toml").write_text('out = "runs"\n[base]\np = 11\nsteps = 4\nwidth = 16\ndepth = 1\n'
                                         'method = "grokfast-ema"\n[grid]\nema_alpha = [0.5, 2.0]\n')
    status, _, err = cli_exit(capsys, "sweep", str(tmp_path / "sweep.toml"))
    assert status == 2 and "ema_alpha=2.0 must be in [0, 1]" in err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_checks_the_machine_for_every_point_before_the_first_launch(tmp_path, capsys):
    (tmp_path / "sweep.toml").write_text('out = "runs"\n[base]\np = 11\nsteps = 4\nwidth = 16\ndepth = 1\n'
                                         '[grid]\ndevice = ["cpu", "cuda:99"]\n')
    status, _, err = cli_exit(capsys, "sweep", str(tmp_path / "sweep.toml"))
    assert status == 2 and "run device=cuda%3A99: invalid TrainConfig: device='cuda:99' is not available" in err
    assert not (tmp_path / "runs").exists()


def test_an_amplifier_file_of_other_hidden_sizes_says_which_flag_to_set(tmp_path, capsys):
    torch.save(NeuralAmplifier((32,)).state_dict(), tmp_path / "amplifier.pt")
    status, _, err = cli_exit(capsys, "run", *TINY_FLAGS, "--method", "neuralgrok", "--amplifier-path",
                              str(tmp_path / "amplifier.pt"), "--out", str(tmp_path / "run"))
    assert status == 2 and "hidden sizes [32]" in err and "--amplifier-hidden 32" in err
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    status, _, err = cli_exit(capsys, "run", *TINY_FLAGS, "--method", "neuralgrok", "--amplifier-path",
                              str(tmp_path / "junk.pt"))
    assert status == 2 and "cannot be loaded as a state dict" in err and len(err.strip().splitlines()) == 1


POLYGON_FLAGS = ["--task", "polygons", "--model", "resnet18", "--image-size", "16", "--image-count", "100",
                 "--train-fraction", "0.5", "--batch-size", "25", "--eval-every", "1", "--threads", "1"]


def test_a_weights_file_of_another_model_exits_2_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NEURALGROK_CACHE", str(tmp_path / "cache"))
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    status, _, err = cli_exit(capsys, "run", *POLYGON_FLAGS, "--steps", "1", "--weights-path",
                              str(tmp_path / "linear.pth"), "--quiet", "--out", str(tmp_path / "run"))
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"weights_path={str(tmp_path / 'linear.pth')!r} does not hold ResNet-18 weights" in err
    assert "unexpected ['bias', 'weight']" in err and "must be a ResNet-18 state dict" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # not even the images drawn
    # A ResNet-18 of another head (what the runner replaces) passes the check, and leaves the RNG alone.
    from neuralgrok.experiments.polygons import resnet18
    torch.save({f"module.{k}": v for k, v in resnet18(num_classes=10).state_dict().items()}, tmp_path / "r.pth")
    config = TrainConfig(task="polygons", model="resnet18", image_size=16, weights_path=str(tmp_path / "r.pth"))
    rng = torch.get_rng_state()
    validate_config(config)
    assert torch.equal(torch.get_rng_state(), rng)


def test_quiet_silences_every_progress_bar_of_a_run(tmp_path, monkeypatch, capfd):
    """A cold image cache (the drawing bar) and the training bar: nothing on stderr with --quiet."""
    monkeypatch.setenv("NEURALGROK_CACHE", str(tmp_path / "cache"))
    assert cli.main(["run", *POLYGON_FLAGS, "--steps", "2", "--quiet", "--out", str(tmp_path / "run")]) == 0
    out, err = capfd.readouterr()
    assert err == "" and (tmp_path / "run" / "summary.json").exists()
    assert cli.main(["run", *TINY_FLAGS[:-1], "--steps", "3"]) == 0  # without --quiet there is a bar
    assert "baseline: 100%" in capfd.readouterr().err


# -- checkpoints that prove their integrity ------------------------------------------------------------------
def interrupted_run(tmp_path, method="grokfast-ema"):
    """An uninterrupted run and a copy of it as a kill after its last checkpoint (step 39) leaves it."""
    config = TrainConfig(**TINY, method=method)
    train(config, tmp_path / "whole", progress=False)
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in ("config.toml", CHECKPOINT, previous_path(CHECKPOINT).name):
        shutil.copy(tmp_path / "whole" / name, killed / name)
    return killed


def flip_byte(path, fraction):
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, problem", [
    (lambda path: flip_byte(path, 0.6), "checksum mismatch: the file is damaged"),
    (lambda path: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2]), "truncated"),
    (lambda path: path.write_bytes(b""), "empty"),
])
def test_a_damaged_checkpoint_is_refused_in_one_line_with_the_choices(tmp_path, capsys, damage, problem):
    killed = interrupted_run(tmp_path)
    damage(killed / CHECKPOINT)
    status, _, err = cli_exit(capsys, "run", "--resume", str(killed))
    assert status == 2 and problem in err and str(killed / CHECKPOINT) in err
    assert "checkpoint.prev.pt (step 26, intact)" in err and "--overwrite" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (killed / "summary.json").exists()
    # The choice it offers: move the damaged file away and resume from the previous checkpoint.
    (killed / CHECKPOINT).rename(tmp_path / "damaged.pt")
    resume(killed, progress=False)
    assert metric_rows(killed) == metric_rows(tmp_path / "whole")


def test_an_old_format_checkpoint_gives_one_clear_line(tmp_path, capsys):
    killed = interrupted_run(tmp_path, method="baseline")
    (killed / previous_path(CHECKPOINT).name).unlink()
    torch.save(read_checkpoint(killed / CHECKPOINT), killed / CHECKPOINT)  # the format before checksums
    status, _, err = cli_exit(capsys, "run", "--resume", str(killed))
    assert status == 2 and "a checkpoint without a checksum, written by an older neuralgrok" in err
    assert "start the run over" in err


@pytest.mark.parametrize("method", ["grokfast-ma", "neuralgrok-frozen"])
def test_checkpoints_load_weights_only_where_torch_can(tmp_path, method):
    killed = interrupted_run(tmp_path, method=method)
    if weights_only_supported():  # every part of a run's state reads without a full unpickle
        payload = (killed / CHECKPOINT).read_bytes().split(b"\n", 1)[1]
        assert torch.load(io.BytesIO(payload), weights_only=True)["step"] == 39
    else:  # torch 1.13: its weights-only unpickler reads no Python floats, so checkpoints are unpickled in full
        assert read_checkpoint(killed / CHECKPOINT)["step"] == 39
    write_checkpoint(tmp_path / "x.pt", {"step": 3})
    write_checkpoint(tmp_path / "x.pt", {"step": 4})
    assert read_checkpoint(tmp_path / "x.pt")["step"] == 4 and read_checkpoint(tmp_path / "x.prev.pt")["step"] == 3


# -- in-place ops that refuse what would corrupt ----------------------------------------------------------------
def grokfast_filter(op):
    """``call(tensors)``: the op on fresh filter state, as its CPU kernel runs it (the state full, so it writes)."""
    def call(tensors, state_requires_grad=False):
        if op == "ema":
            ops.grokfast_ema_(tensors, [torch.zeros_like(t).requires_grad_(state_requires_grad) for t in tensors],
                              [True] * len(tensors), 0.9, 2.0)
        else:
            ops.grokfast_ma_(tensors, [t.new_zeros((2, *t.shape)) for t in tensors],
                             [torch.zeros_like(t).requires_grad_(state_requires_grad) for t in tensors],
                             [3] * len(tensors), 2.0)
    return call


@pytest.mark.parametrize("op", ["ema", "ma"])
def test_in_place_filters_refuse_tensors_of_a_graph_as_torchs_own_in_place_ops_do(op):
    call = grokfast_filter(op)
    leaf = torch.randn(3, requires_grad=True)
    non_leaf = torch.randn(3, requires_grad=True) * 2
    for tensor in (leaf, non_leaf):
        before = tensor.detach().clone()
        with pytest.raises(RuntimeError, match=r"grads\[0\] requires grad, but the op writes it in place"):
            call([tensor])
        assert torch.equal(tensor.detach(), before)  # refused before any write
    with pytest.raises(RuntimeError, match=r"\[0\] requires grad, but the op writes it in place"):
        call([torch.randn(3)], state_requires_grad=True)  # its own state too
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        leaf.add_(1.0)  # what torch's own in-place ops do with a leaf
    # A tensor that requires no grad but was saved for a backward: the write is allowed (as for torch's
    # ops), and that backward then refuses instead of giving wrong gradients.
    x = torch.randn(3, requires_grad=True)
    saved = torch.randn(3)
    loss = (x * saved).sum()
    call([saved])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    with torch.no_grad():  # where torch's in-place ops may write a leaf, so may these
        call([leaf])


# -- wrappers that refuse what would corrupt -----------------------------------------------------------------
def linear_with_grads(seed=0, scale=1.0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    loss = model(torch.randn(8, 4)).pow(2).sum() * scale
    loss.backward()
    return model


def stepped(wrapper_factory, steps=3):
    model = linear_with_grads()
    optimizer = wrapper_factory(torch.optim.AdamW(model.parameters(), lr=1e-2))
    for _ in range(steps):
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("source, target", [
    (lambda base: Grokfast(base, mode="ema"), lambda base: Grokfast(base, mode="ma", window=2)),
    (lambda base: Grokfast(base, mode="ma", window=2), lambda base: Grokfast(base, mode="ema")),
    (lambda base: NeuralGrok(base, NeuralAmplifier((8,)), train_amplifier=False),
     lambda base: Grokfast(base, mode="ema")),
    (lambda base: Grokfast(base, mode="ema"),
     lambda base: NeuralGrok(base, NeuralAmplifier((8,)), train_amplifier=False)),
    (lambda base: NeuralGrok(base, NeuralAmplifier((8,)), train_amplifier=False),
     lambda base: NeuralGrok(base, NeuralAmplifier((16,)), train_amplifier=False)),
    (lambda base: Normalize(base), lambda base: Grokfast(base, mode="ema")),
])
def test_load_state_dict_of_another_mode_or_wrapper_raises_and_changes_nothing(source, target):
    _, saved = stepped(source)
    state = saved.state_dict()
    _, optimizer = stepped(target, steps=2)
    before = copy.deepcopy(optimizer.state_dict())
    with pytest.raises(ValueError, match="nothing was loaded"):
        optimizer.load_state_dict(state)
    after = optimizer.state_dict()
    assert repr(after) == repr(before)  # tensors print their values: the base optimizer's state too


def test_load_state_dict_of_another_model_raises_and_changes_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model(torch.randn(2, 4)).sum().backward()
    other = Grokfast(torch.optim.AdamW(model.parameters()), mode="ema")
    other.step()
    _, optimizer = stepped(lambda base: Grokfast(base, mode="ema"))
    before = repr(optimizer.state_dict())
    with pytest.raises(ValueError, match="another model"):
        optimizer.load_state_dict(other.state_dict())
    assert repr(optimizer.state_dict()) == before


def test_load_state_dict_of_another_base_optimizer_raises_and_changes_nothing():
    _, saved = stepped(lambda base: Grokfast(base, mode="ema"))  # around AdamW
    _, optimizer = stepped(lambda base: Grokfast(torch.optim.SGD(base.param_groups[0]["params"], lr=0.1,
                                                                 momentum=0.9), mode="ema"), steps=2)
    before = repr(optimizer.state_dict())
    with pytest.raises(ValueError, match="the state of AdamW, but this wrapper's base optimizer is SGD"):
        optimizer.load_state_dict(saved.state_dict())
    assert repr(optimizer.state_dict()) == before
    state = saved.state_dict()
    del state["base_type"]  # a state saved before the base optimizer's type was recorded still loads
    _, same = stepped(lambda base: Grokfast(base, mode="ema"))
    same.load_state_dict(state)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_gradients_that_overflow_in_the_transform_never_reach_the_weights(policy):
    model = linear_with_grads(scale=1e30)  # finite gradients of about 1e31
    optimizer = Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-2), mode="ema", lamb=1e10, nonfinite=policy)
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    weights = [p.detach().clone() for p in model.parameters()]
    if policy == "raise":
        with pytest.raises(NonFiniteGradientError, match="transformed gradient"):
            optimizer.step()
    else:
        optimizer.step()
        assert optimizer.skipped_steps == 1
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    assert optimizer.base_optimizer.state_dict()["state"] == {}


@pytest.mark.parametrize("train_amplifier", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_neuralgrok_with_the_default_amplifier_follows_the_models_dtype(dtype, train_amplifier):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).to(dtype)
    x = torch.randn(8, 4, dtype=dtype)
    try:
        model(x)
    except RuntimeError:  # torch 1.13 has no float16 matmul on the CPU: no such model to train
        pytest.skip(f"this torch cannot run a {dtype} Linear on the CPU")
    optimizer = NeuralGrok(torch.optim.SGD(model.parameters(), lr=1e-1), meta_every=1, train_amplifier=train_amplifier,
                           outer_closure=lambda: model(x).float().pow(2).mean())
    assert optimizer.amplifier.mlp[0].weight.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)

    def closure():
        optimizer.zero_grad()
        loss = model(x).float().pow(2).mean()
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step(closure)
    assert optimizer.meta_steps == int(train_amplifier)
    assert all(p.dtype == dtype and bool(torch.isfinite(p).all()) for p in model.parameters())
    assert not all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


# -- smaller frictions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_honour_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        train(TrainConfig(**dict(TINY, steps=27, snapshot_every=10), method="neuralgrok-frozen"), tmp_path / "run",
              progress=False)
        from neuralgrok.experiments.compare import compare
        compare([tmp_path / "run"], tmp_path / "cmp")
    finally:
        os.umask(before)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {str(p.relative_to(tmp_path)) for p in files}
    assert {"run/config.toml", "run/metrics.csv", "run/summary.json", f"run/{CHECKPOINT}", "run/amplifier.pt",
            f"run/{previous_path(CHECKPOINT).name}", "run/snapshots/step_0000000.pt", "cmp/comparison.md"} <= names
    for path in files:
        assert path.stat().st_mode & 0o777 == mode, path


def test_a_moved_run_finds_its_amplifier_and_resumes(tmp_path):
    torch.manual_seed(1)
    home = tmp_path / "home"
    home.mkdir()
    torch.save(NeuralAmplifier((8,)).state_dict(), home / "amplifier.pt")
    config = TrainConfig(**TINY, method="neuralgrok", amplifier_hidden=(8,), amplifier_path=str(home / "amplifier.pt"))
    train(config, home / "whole", progress=False)
    assert 'amplifier_path = "../amplifier.pt"' in (home / "whole" / "config.toml").read_text()
    shutil.copytree(home / "whole", tmp_path / "reference")
    (home / "whole" / "summary.json").unlink()
    (home / "whole" / "metrics.csv").unlink()  # killed after its last checkpoint (step 39)
    moved = tmp_path / "elsewhere"
    shutil.move(home, moved)
    resumed = resume(moved / "whole", progress=False)
    assert metric_rows(moved / "whole") == metric_rows(tmp_path / "reference")
    assert resumed.config.amplifier_path == str(moved / "amplifier.pt")
    assert stored_config(resumed.config, moved / "whole")["amplifier_path"] == "../amplifier.pt"


def test_run_without_out_says_nothing_is_saved(capsys):
    status, _, err = cli_exit(capsys, "run", *TINY_FLAGS, "--steps", "2")
    assert status == 0 and "no --out: nothing is saved" in err


def test_a_sweeps_out_is_relative_to_the_sweep_file(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "s.toml").write_text('out = "../runs/s"\n[base]\np = 11\n[grid]\nseed = [0]\n')
    monkeypatch.chdir(tmp_path / "configs")  # wherever it is run from
    assert load_sweep(tmp_path / "configs" / "s.toml")[0].out_dir == tmp_path / "runs" / "s" / "seed=0"


def test_quiet_silences_the_image_drawing_bar_too(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("NEURALGROK_CACHE", str(tmp_path))  # a cold cache: the images are drawn
    config = TrainConfig(task="polygons", model="resnet18", image_size=16, image_count=100, train_fraction=0.5)
    build_data(config, with_outer=False, progress=False)
    assert capfd.readouterr().err == ""


def test_weight_norm_means_the_same_in_the_api_and_in_metrics_csv(tmp_path):
    result = train(TrainConfig(**dict(TINY, steps=10)), progress=False)
    assert result.history[-1]["weight_norm"] == pytest.approx(measures.weight_norm(result.model), rel=1e-12)
    assert measures.weight_norm(result.model) == pytest.approx(measures.squared_weight_norm(result.model) ** 0.5)


def test_readme_shell_examples_quote_their_arguments():
    """A task such as a*b is a glob to the shell: quoted in every example (file patterns are meant as globs)."""
    lines = [line for line in README.read_text().splitlines() if line.lstrip().startswith("neuralgrok ")]
    assert len(lines) > 10
    for line in lines:
        for word in line.split("#")[0].split():
            if set(word) & set("*?[") and "/" not in word:
                assert word[0] in "'\"", line


def test_a_sweep_resumes_its_own_unfinished_run_and_refuses_another_configs(tmp_path):
    (tmp_path / "s.toml").write_text('out = "runs"\n[base]\np = 11\nsteps = 4\nwidth = 16\ndepth = 1\n'
                                     '[grid]\nseed = [0, 1]\n')
    runs = load_sweep(tmp_path / "s.toml")
    train(runs[0].config, runs[0].out_dir, progress=False)
    (runs[0].out_dir / "summary.json").unlink()  # started, killed before the end
    from neuralgrok.experiments.sweeps import SweepError, check_runs
    assert check_runs(runs)[0].command == runs[0].resume_command()
    train(dataclasses.replace(runs[1].config, lr=0.1), runs[1].out_dir, progress=False)
    with pytest.raises(SweepError, match="seed=1: .* holds a finished run of another config"):
        check_runs(load_sweep(tmp_path / "s.toml"))


def test_a_sweep_resumes_a_run_that_differs_only_in_fields_its_method_does_not_read(tmp_path):
    # A baseline run written when NeuralGrok's and Grokfast's fields had other defaults is this sweep's run;
    # for a neuralgrok run the amplifier's size is part of the run.
    (tmp_path / "s.toml").write_text('out = "runs"\n[base]\np = 11\nsteps = 4\nwidth = 16\ndepth = 1\n'
                                     'checkpoint_every = 2\n[grid]\nmethod = ["baseline", "neuralgrok"]\n')
    runs = load_sweep(tmp_path / "s.toml")
    for run in runs:
        train(dataclasses.replace(run.config, amplifier_hidden=(16,), ema_alpha=0.5, meta_every=2), run.out_dir,
              progress=False)
        (run.out_dir / "summary.json").unlink()  # started, killed before the end
    from neuralgrok.experiments.sweeps import SweepError, check_runs
    with pytest.raises(SweepError, match="method=neuralgrok: .* holds a run of another config") as error:
        check_runs(runs)
    assert "method=baseline" not in str(error.value)
    assert check_runs(runs[:1])[0].command == runs[0].resume_command()
    assert resume(runs[0].out_dir, progress=False).summary["steps"] == 4  # from its checkpoint


def test_a_demo_into_an_earlier_demos_directory_is_refused_before_any_run(tmp_path):
    from neuralgrok.experiments.demo import run_demo
    run_demo(tmp_path, steps=2, progress=False, methods=("baseline", "grokfast-ema"))
    (tmp_path / "grokfast-ema" / "summary.json").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(RunDirectoryError, match="holds the runs of an earlier demo"):
        run_demo(tmp_path, steps=3, progress=False, methods=("baseline", "grokfast-ema"))
    assert snapshot(tmp_path) == before
    results, _ = run_demo(tmp_path, steps=3, progress=False, methods=("baseline", "grokfast-ema"), overwrite=True)
    assert [strict_json(tmp_path / m / "summary.json")["steps"] for m in ("baseline", "grokfast-ema")] == [3, 3]
