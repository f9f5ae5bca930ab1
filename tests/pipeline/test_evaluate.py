"""Noisy evaluation: batched sigmas have the distribution of the one-sigma-at-a-time loop."""
import math

import torch

from vant.pipeline.evaluate import sweep
from vant.pipeline.runs import load_trained


def _model_and_test(run):
    model, test, _ = load_trained(run, "cpu")
    return model, test


def test_batched_sweep_matches_loop_in_distribution(trained_run):
    model, test = _model_and_test(trained_run)
    sigmas, reps = [0.5, 1.0, 2.0], 12
    rb = sweep(model, test, sigmas, reps, seed=0, batched=True)
    rl = sweep(model, test, sigmas, reps, seed=100, batched=False)
    for s in sigmas:
        a = torch.tensor([r["accuracy"] for r in rb if r["sigma"] == s])
        b = torch.tensor([r["accuracy"] for r in rl if r["sigma"] == s])
        se = math.sqrt(a.var() / reps + b.var() / reps)
        assert abs(a.mean() - b.mean()) < 4 * se + 0.5, (s, a.mean(), b.mean(), se)
    # the accuracy at 0.5 must differ from the one at 2.0: the sigmas really are applied per block
    acc = {s: sum(r["accuracy"] for r in rb if r["sigma"] == s) / reps for s in sigmas}
    assert acc[0.5] > acc[2.0] + 10


def test_sweep_is_reproducible_and_leaves_training_rng_alone(trained_run):
    model, test = _model_and_test(trained_run)
    torch.manual_seed(42)
    before = torch.get_rng_state()
    a = sweep(model, test, [0.5, 1.0], 2, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = sweep(model, test, [0.5, 1.0], 2, seed=7)
    assert a == b
    assert [r["seed"] for r in a] == [7, 7, 8, 8]
    c = sweep(model, test, [0.5, 1.0], 2, seed=8)
    assert [r["correct"] for r in c] != [r["correct"] for r in a]


def test_sweep_restores_train_mode(trained_run):
    model, test = _model_and_test(trained_run)
    model.train()
    sweep(model, test, [0.5], 1, seed=0)
    assert model.training


def test_progress_callback_counts_the_work_and_changes_no_result(trained_run):
    model, test = _model_and_test(trained_run)
    n = len(test.x)
    for batched in (True, False):
        steps = []
        with_bar = sweep(model, test, [0.5, 1.0, 2.0], 2, seed=3, batched=batched, on_step=steps.append)
        assert with_bar == sweep(model, test, [0.5, 1.0, 2.0], 2, seed=3, batched=batched)
        assert sum(steps) == 2 * 3 * n and len(steps) > 2  # (image, sigma) pairs, one call per forward pass
