"""Smoke tests of the benchmark scripts: ``distributions.py --quick``, ``evaluation.py --quick``,
``reproduce.py all --smoke``, ``kl_gradient.py`` and ``training_step.py`` run and print their tables.

No timing is asserted: the benchmarks are not tests, this only keeps the scripts from rotting.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .scripts import run_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "distributions.py"

OPS = ("rsample", "rsample+backward", "log_prob", "KL to uniform")
QUICK_DIMS = (3, 10)
QUICK_BATCH = "64"
COLUMNS = (
    "ours vMF (ms)",
    "power-spherical PS (ms)",
    "ours PS (ms)",
    "scipy vMF, one (μ, κ) (ms)",
    "ours vMF / power-spherical",
)


def _table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_quick_benchmark_prints_every_row():
    result = run_script(SCRIPT, "--quick", "--threads", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    rows = _table_rows(result.stdout)
    header, separator, body = rows[0], rows[1], rows[2:]
    assert header[:3] == ["op", "m", "batch"]
    assert tuple(header[3:]) == COLUMNS
    assert all(set(cell) <= set("-:") for cell in separator)

    expected = {(op, str(dim), QUICK_BATCH) for op in OPS for dim in QUICK_DIMS}
    keys = [tuple(row[:3]) for row in body]
    assert sorted(keys) == sorted(expected)
    for row in body:
        assert len(row) == len(header)
        op = row[0]
        ours, reference, ours_ps, scipy_cell, ratio = row[3:]
        for cell in (ours, reference, ours_ps, ratio):
            assert float(cell) > 0
        if op in ("rsample", "log_prob"):
            assert float(scipy_cell) > 0
        else:  # no gradients and no batched KL in scipy
            assert scipy_cell == "—"

    assert "dtype float32" in result.stdout
    assert "vMF rsample+backward at m=10, batch=1e5:" in result.stdout


# --------------------------------------------------------------------------------------------------
# benchmarks/reproduce.py and benchmarks/evaluation.py
# --------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = ROOT / "benchmarks" / "reproduce.py"
EVALUATION = ROOT / "benchmarks" / "evaluation.py"
KL_GRADIENT = ROOT / "benchmarks" / "kl_gradient.py"
TRAINING_STEP = ROOT / "benchmarks" / "training_step.py"
TABLES = {  # table -> number of rows
    "table1": 10,
    "table2": 6,
    "product": 9,
    "power-spherical": 10,
    "delta-vae": 4,
    "flows": 5,
}


def _run_script(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not os.environ.get("PYRO_SVAE_DATA"):
        pytest.fail(
            "the benchmarks need the dataset files: set PYRO_SVAE_DATA (tests/conftest.py does "
            "when ../shared/data exists)"
        )
    return run_script(script, *args, cwd=cwd)


def _assert_timing_table(result, columns: list[str], cases: list[str]) -> None:
    """A benchmark's table: the timing columns after case and batch, one row per case, all > 0."""
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _table_rows(result.stdout)
    assert rows[0][2:] == columns
    assert [row[0] for row in rows[2:]] == cases
    assert all(float(cell) > 0 for row in rows[2:] for cell in row[2:])


def test_reproduce_smoke_writes_every_table_then_reuses_and_resumes(tmp_path):
    """``all --smoke`` trains every run once (about 30 runs of 2 minibatches, ~20 s), writes each
    table; a second invocation reuses the finished runs and resumes one without a summary."""
    flags = ("--smoke", "--threads", "1", "--no-progress", "--out", str(tmp_path))
    result = _run_script(REPRODUCE, "all", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tables = tmp_path / "smoke" / "tables"
    for name, num_rows in TABLES.items():
        markdown = (tables / f"{name}.md").read_text(encoding="utf-8")
        assert markdown in result.stdout
        rows = json.loads((tables / f"{name}.json").read_text(encoding="utf-8"))
        assert len(rows) == num_rows
        for row in rows:
            assert not row["failed"]
            if name != "table2":
                assert math.isfinite(row["metrics"]["ll"]["mean"])
    # Table 1: the d -> latent mapping, ours next to the paper with a difference column
    table1 = json.loads((tables / "table1.json").read_text(encoding="utf-8"))
    latents = [(row["d"], row["model"], row["latent"]) for row in table1]
    assert ("2", "S-VAE", "vmf:2") in latents
    assert ("40", "N-VAE", "normal:40") in latents
    assert ("10", "S-VAE", "vmf:10") in latents
    assert {row["published"]["ll"] for row in table1} >= {-132.50, -135.73, -90.87}
    markdown = (tables / "table1.md").read_text(encoding="utf-8")
    assert "| LL (ours) | LL (paper) | Δ (ours − paper) |" in markdown
    assert "−132.50" in markdown
    trained = result.stderr.count("training ...")
    assert trained == 30  # runs shared between tables are trained once

    # rerun Table 2 (the d <= 10 runs of Table 1): everything is reused, and a run whose summary is
    # gone is resumed from its checkpoint and gives the same test numbers
    before = json.loads((tables / "table2.json").read_text(encoding="utf-8"))
    run_dir = Path(next(r for r in before if r["latent"] == "vmf:5")["run_dirs"][0])
    (run_dir / "summary.json").unlink()
    again = _run_script(REPRODUCE, "table2", *flags, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reused") == 5
    assert again.stderr.count("resuming") == 1
    assert "training ..." not in again.stderr
    after = json.loads((tables / "table2.json").read_text(encoding="utf-8"))
    assert [r["metrics"] for r in after] == [r["metrics"] for r in before]


def test_reproduce_report_tabulates_finished_runs_only(tmp_path):
    flags = ("--smoke", "--threads", "1", "--no-progress", "--out", str(tmp_path))
    empty = _run_script(REPRODUCE, "delta-vae", *flags, "--report", cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert not list(tmp_path.rglob("checkpoint.pt"))  # trained nothing
    rows = json.loads((tmp_path / "smoke" / "tables" / "delta-vae.json").read_text("utf-8"))
    assert [row["unfinished"] for row in rows] == [1] * TABLES["delta-vae"]
    assert empty.stdout.count("0/1 (not finished)") == TABLES["delta-vae"]
    trained = _run_script(REPRODUCE, "delta-vae", *flags, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = _run_script(REPRODUCE, "delta-vae", *flags, "--report", cwd=tmp_path)
    assert "training ..." not in report.stderr
    rows = json.loads((tmp_path / "smoke" / "tables" / "delta-vae.json").read_text("utf-8"))
    assert all(row["unfinished"] == 0 and row["metrics"]["ll"]["values"] for row in rows)
    assert "not finished" not in report.stdout


def test_reproduce_only_trains_the_named_runs(tmp_path):
    flags = ("--smoke", "--threads", "1", "--no-progress", "--out", str(tmp_path))
    result = _run_script(
        REPRODUCE, "product", *flags, "--only", "vmf:40", "caltech101/vmf:9", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("training ...") == 2
    rows = json.loads((tmp_path / "smoke" / "tables" / "product.json").read_text("utf-8"))
    trained = {(row["dataset"], row["latent"]) for row in rows if not row["unfinished"]}
    assert trained == {("static_mnist", "vmf:40"), ("caltech101", "vmf:9")}
    assert result.stdout.count("0/1 (not finished)") == TABLES["product"] - 2
    # a name that is not in the table is refused before anything trains, with the valid names
    wrong = _run_script(REPRODUCE, "product", *flags, "--only", "vmf:41", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "no run named 'vmf:41'" in wrong.stderr
    assert "static_mnist/vmf:9,9,9,10" in wrong.stderr


def test_reproduce_list_trains_nothing(tmp_path):
    result = _run_script(
        REPRODUCE, "product", "--smoke", "--list", "--out", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("new ")]
    assert len(lines) == TABLES["product"]
    assert any("static_mnist vmf:9,9,9,10 seed 0" in line for line in lines)
    assert not list(tmp_path.rglob("checkpoint.pt"))


def test_reproduce_list_shows_how_far_an_unfinished_run_got(tmp_path):
    folder = tmp_path / "smoke" / "caltech101" / "vmf_9" / "seed0"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")  # an interrupted run: a checkpoint, no summary
    (folder / "metrics.csv").write_text(
        "epoch,val_elbo,best_epoch\n1,-150.5,1\n2,-140.25,2\n3,-141.0,2\n", encoding="utf-8"
    )
    flags = ("--smoke", "--list", "--out", str(tmp_path), "--only", "caltech101/vmf:9")
    result = _run_script(REPRODUCE, "product", *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = "(after epoch 3, best validation ELBO −140.25 at epoch 2)"
    assert f"partial  caltech101 vmf:9 seed 0 {expected}: {folder}" in result.stdout


def test_evaluation_benchmark_quick(tmp_path):
    result = _run_script(EVALUATION, "--quick", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _table_rows(result.stdout)
    ll_row = next(row for row in rows if row[:2] == ["1", "50"])
    seconds_ours, seconds_reference, ratio = (float(cell) for cell in ll_row[2:5])
    assert min(seconds_ours, seconds_reference, ratio) > 0
    # 20 samples: both draw them in one guide pass from the same seed, so the estimates agree
    assert float(ll_row[-2]) == pytest.approx(float(ll_row[-1]), abs=0.05)
    assert any(row[:2] == ["1", "vmf:9"] for row in rows)  # the epoch timing


def test_kl_gradient_benchmark_prints_every_case(tmp_path):
    cases = ["normal:4", "vmf:3", "normal:4 planar:2", "normal:4 nice:2"]
    budget = ["--steps", "2", "--warmup", "1", "--batch-size", "8"]
    result = run_script(KL_GRADIENT, *budget, "--cases", *cases, cwd=tmp_path, timeout=300)
    columns = [
        "default (ms)",
        "path (ms)",
        "base path (ms)",
        "path / default",
        "base path / default",
    ]
    _assert_timing_table(result, columns, cases)


def test_committed_full_runs_are_still_recognised_as_finished(tmp_path):
    """The full-mode summaries under ``benchmarks/results/full`` (the runs recorded in
    ``docs/results.md``) must still match what ``reproduce.py`` asks for, so that
    ``--report --out benchmarks/results`` tabulates them instead of calling them unfinished."""
    committed = ROOT / "benchmarks" / "results"
    summaries = sorted((committed / "full").glob("*/*/seed*/summary.json"))
    assert summaries, f"no committed full-mode summaries under {committed / 'full'}"
    out = tmp_path / "results"
    shutil.copytree(committed, out)
    # runs trained with --batch-size / --kl-warmup / --kl / --kl-gradient / --grad-clip / --seeds
    # are listed under those flags
    groups: dict[tuple[int, float, str, str, float | None], set[int]] = {}
    for summary in summaries:
        config = json.loads(summary.read_text(encoding="utf-8"))["config"]
        key = (
            config["batch_size"],
            config["kl_warmup"],
            config.get("kl", "auto"),
            config.get("kl_gradient", "total"),
            config.get("grad_clip"),
        )
        groups.setdefault(key, set()).add(config["seed"])
    done = set()
    for (batch_size, kl_warmup, kl, kl_gradient, grad_clip), seeds in groups.items():
        flags = ["--batch-size", str(batch_size), "--kl-warmup", f"{kl_warmup:g}"]
        flags += ["--kl", kl, "--kl-gradient", kl_gradient]
        if grad_clip is not None:
            flags += ["--grad-clip", repr(grad_clip)]
        flags += ["--seeds", *map(str, sorted(seeds))]
        listed = _run_script(REPRODUCE, "all", "--list", "--out", str(out), *flags, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr[-3000:]
        done |= {
            line.rsplit(": ", 1)[1]
            for line in listed.stdout.splitlines()
            if line.startswith("done ")
        }
    for summary in summaries:
        assert str(out / summary.parent.relative_to(committed)) in done, summary


def test_committed_table1_report_signs_the_differences(tmp_path):
    """The difference column carries its sign both ways: the committed d = 2 N-VAE is above the
    paper (+), the d = 40 S-VAE below it (−)."""
    out = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", out)
    report = _run_script(REPRODUCE, "table1", "--report", "--out", str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    header, *rows = _table_rows(report.stdout)
    difference = {(row[0], row[1]): row[header.index("Δ (ours − paper)")] for row in rows}
    assert difference[("2", "N-VAE")].startswith("+"), difference
    assert difference[("40", "S-VAE")].startswith("−"), difference


def test_reproduce_batch_size_and_warmup_get_their_own_folders_and_tables(tmp_path):
    """A run with a non-default batch size or KL warm-up never reuses (or overwrites) a default run:
    it trains in its own folder, its table file is named after the settings, and the table's
    protocol line states them."""
    flags = ("--smoke", "--threads", "1", "--no-progress", "--out", str(tmp_path))
    only = ("--only", "caltech101/vmf:9")
    default = _run_script(REPRODUCE, "product", *flags, *only, cwd=tmp_path)
    assert default.returncode == 0, default.stderr[-3000:]
    assert "batch 100, no KL warm-up" in default.stdout
    changed = _run_script(
        REPRODUCE, "product", *flags, *only, "--batch-size", "64", "--kl-warmup", "5", cwd=tmp_path
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert changed.stderr.count("training ...") == 1  # not reused from the default run
    assert "batch 64, a linear KL warm-up over 5 epochs" in changed.stdout
    tables = tmp_path / "smoke" / "tables"
    assert "batch 100" in (tables / "product.md").read_text(encoding="utf-8")
    assert "batch 64" in (tables / "product_batch_64_warmup_5.md").read_text(encoding="utf-8")
    summary = (
        tmp_path / "smoke" / "caltech101" / "vmf_9_batch_64_warmup_5" / "seed0" / "summary.json"
    )
    config = json.loads(summary.read_text(encoding="utf-8"))["config"]
    assert (config["batch_size"], config["kl_warmup"]) == (64, 5.0)
    bad = _run_script(REPRODUCE, "product", *flags, "--batch-size", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--batch-size must be a positive integer, got 0" in bad.stderr


def test_reproduce_kl_estimator_gets_its_own_folders_and_tables(tmp_path):
    """``--kl mc --kl-gradient path`` trains in its own folder with those settings, names its table
    after them and states them in the protocol line; a path gradient without a Monte Carlo KL is
    refused."""
    flags = ("--smoke", "--threads", "1", "--no-progress", "--out", str(tmp_path))
    only = ("--only", "caltech101/vmf:9")
    estimator = ("--kl", "mc", "--kl-gradient", "path")
    result = _run_script(REPRODUCE, "product", *flags, *only, *estimator, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the Monte Carlo KL in every run, the path-derivative gradient" in result.stdout
    table = tmp_path / "smoke" / "tables" / "product_kl_mc_path_gradient.md"
    assert "the Monte Carlo KL in every run" in table.read_text(encoding="utf-8")
    folder = tmp_path / "smoke" / "caltech101" / "vmf_9_kl_mc_path_gradient" / "seed0"
    config = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["config"]
    assert (config["kl"], config["kl_gradient"]) == ("mc", "path")
    assert not (tmp_path / "smoke" / "caltech101" / "vmf_9").exists()
    listed = _run_script(REPRODUCE, "product", *flags, *only, *estimator, "--list", cwd=tmp_path)
    assert f"done     caltech101 vmf:9 seed 0: {folder}" in listed.stdout
    bad = _run_script(
        REPRODUCE, "product", *flags, "--kl", "analytic", "--kl-gradient", "path", cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "--kl-gradient path acts on a Monte Carlo KL" in bad.stderr
    base = ("--kl", "mc", "--kl-gradient", "base_path")
    listed = _run_script(REPRODUCE, "product", *flags, *only, *base, "--list", cwd=tmp_path)
    base_folder = tmp_path / "smoke" / "caltech101" / "vmf_9_kl_mc_base_path_gradient" / "seed0"
    assert f"new      caltech101 vmf:9 seed 0: {base_folder}" in listed.stdout
    bad = _run_script(
        REPRODUCE, "product", *flags, "--kl", "analytic", "--kl-gradient", "base_path", cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "--kl-gradient base_path acts on a Monte Carlo KL" in bad.stderr


def test_reproduce_gradient_clipping_gets_its_own_folders(tmp_path):
    """``--grad-clip`` reaches the run's config, names its folder and table, states it in the
    protocol line, and rejects a factor that is not > 0."""
    flags = ("--smoke", "--threads", "1", "--no-progress", "--out", str(tmp_path))
    only = ("--only", "caltech101/vmf:9")
    result = _run_script(REPRODUCE, "product", *flags, *only, "--grad-clip", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "the gradient norm clipped at 5 times the median norm of the previous 500" in result.stdout
    )
    folder = tmp_path / "smoke" / "caltech101" / "vmf_9_clip_5" / "seed0"
    config = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["config"]
    assert (config["grad_clip"], config["grad_clip_window"]) == (5.0, 500)
    assert (tmp_path / "smoke" / "tables" / "product_clip_5.md").is_file()
    assert not (tmp_path / "smoke" / "caltech101" / "vmf_9").exists()
    bad = _run_script(REPRODUCE, "product", *flags, "--grad-clip", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--grad-clip must be a finite number > 0, got 0" in bad.stderr


def test_training_step_benchmark_prints_every_latent(tmp_path):
    latents = ["vmf:2,2", "normal:3"]
    budget = ["--steps", "2", "--warmup", "1", "--batch-size", "8", "--threads", "1"]
    columns = [
        "Pyro SVI step (ms)",
        "trainer's step (ms)",
        "PyTorch step (ms)",
        "ratio",
        "trainer's ratio",
    ]
    for clock in ("wall", "cpu"):
        result = run_script(
            TRAINING_STEP,
            *budget,
            "--clock",
            clock,
            "--latent",
            *latents,
            cwd=tmp_path,
            timeout=300,
        )
        assert f"clock={clock}" in result.stdout
        _assert_timing_table(result, columns, latents)
