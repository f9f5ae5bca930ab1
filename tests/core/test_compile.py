"""The fast paths draw the same noise distribution as the eager reference (spec 1.1: i.i.d.
N(0, sigma^2) per element, fresh at every call), and the compiled model neither splits into
several graphs nor recompiles when sigma changes."""
import math

import pytest
import torch
from torch import nn

import vant
from vant.core.compile import compile_noisy
from vant.core.noise import additive


class Probe(nn.Module):
    """Returns the raw noise of three draws: the input site, and two calls of one shared module."""

    def __init__(self):
        super().__init__()
        self.a = nn.Identity()

    def forward(self, x):
        return x, self.a(x), self.a(x)


def _probe():
    model = Probe()
    vant.inject_noise_(model, ["input", "a"], types=(nn.Identity,))
    return model


def _draws(forward, x, calls: int) -> list[torch.Tensor]:
    """Noise of every draw of ``calls`` forward passes (x is zero, so the input site's output is its noise)."""
    out = []
    for _ in range(calls):
        e_in, e1, e2 = (t.detach().float() for t in forward(x))
        out += [e_in, e1 - e_in, e2 - e_in]
    return out


def check_standard_normal_iid(draws: list[torch.Tensor], sigma_rows: torch.Tensor, k: float = 5.0) -> None:
    """Each draw divided by its row's sigma must look i.i.d. N(0, 1): mean, std, kurtosis, tail mass,
    neighbour correlation within a draw and correlation between draws, each within k standard errors."""
    z = [(d / sigma_rows.view(-1, *([1] * (d.dim() - 1)))).flatten() for d in draws]
    n = z[0].numel()
    allz = torch.cat(z).double()
    big_n = allz.numel()
    assert abs(allz.mean().item()) < k / math.sqrt(big_n)
    assert abs(allz.std().item() - 1) < k / math.sqrt(2 * big_n)
    kurt = (allz**4).mean().item() / (allz**2).mean().item() ** 2
    assert abs(kurt - 3) < k * math.sqrt(24 / big_n)
    p = 2 * 0.5 * math.erfc(2 / math.sqrt(2))  # P(|z| > 2)
    assert abs((allz.abs() > 2).double().mean().item() - p) < k * math.sqrt(p * (1 - p) / big_n)
    for d in z:  # per draw: right spread (catches a sigma applied to the wrong rows) and no serial correlation
        d = d.double()
        assert abs(d.std().item() - 1) < k / math.sqrt(2 * n)
        assert abs((d[1:] * d[:-1]).mean().item()) < k / math.sqrt(n)
    corr = torch.corrcoef(torch.stack(z).double())
    off = corr[~torch.eye(len(z), dtype=torch.bool)]
    assert off.abs().max().item() < k / math.sqrt(n), "draws of different sites or calls are correlated"


@pytest.fixture
def noise_threads():
    from vant.core.noise import set_cpu_noise_threads

    yield set_cpu_noise_threads
    set_cpu_noise_threads(None)


SIGMA_ROWS = torch.tensor([0.5, 1.0, 2.0, 0.25] * 8)  # one sigma per sample, several distinct values


def test_eager_reference_is_iid_normal():
    torch.manual_seed(0)
    model = _probe()
    vant.set_sigma_(model, SIGMA_ROWS)
    check_standard_normal_iid(_draws(model, torch.zeros(32, 4, 16, 16), calls=2), SIGMA_ROWS)


@pytest.mark.parametrize("fallback_random", [True, False], ids=["aten-rng", "inductor-philox"])
def test_compiled_noise_has_the_eager_distribution(fallback_random):
    """The CPU default keeps ATen's generator; inductor's own Philox (what CUDA uses) is checked too."""
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = _probe()
    vant.set_sigma_(model, SIGMA_ROWS)
    compiled = compile_noisy(model, "cpu", fallback_random=fallback_random)
    x = torch.zeros(32, 4, 16, 16)
    with torch.no_grad():
        draws = _draws(compiled, x, calls=2)
        check_standard_normal_iid(draws, SIGMA_ROWS)
        torch.manual_seed(5)  # reproducible from the global seed, like the eager path
        a = compiled(x)[1]
        torch.manual_seed(5)
        assert torch.equal(a, compiled(x)[1])


def _counting():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return graphs, backend


def test_compiled_model_is_one_graph_and_sigma_changes_do_not_recompile():
    torch._dynamo.reset()
    graphs, backend = _counting()
    model = vant.create_model("lenet5")
    vant.inject_noise_(model)
    compiled = compile_noisy(model, backend=backend)
    x = torch.randn(8, 3, 32, 32)
    vant.set_sigma_(model, torch.rand(8))
    compiled(x)
    assert len(graphs) == 1  # the root's input pre-hook is in the same graph as the forward
    assert sum(n.target is torch.randn for n in graphs[0].graph.nodes) == 12  # every site draws inside it
    for _ in range(3):
        vant.set_sigma_(model, torch.rand(8) * 3)
        compiled(x)
    assert len(graphs) == 1
    vant.set_sigma_(model, torch.rand(5))  # the last, smaller batch gets one static graph of its own
    compiled(x[:5])
    vant.set_sigma_(model, torch.rand(8))
    compiled(x)
    vant.set_sigma_(model, torch.rand(5))
    compiled(x[:5])
    assert len(graphs) == 2


def test_a_clean_and_a_noisy_model_of_one_class_do_not_share_a_graph():
    """Dynamo does not guard on hooks: without a code object per compile_noisy call, the noisy model
    below reused the clean model's graph and ran without noise."""
    torch._dynamo.reset()
    graphs, backend = _counting()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    clean = vant.create_model("lenet5")
    noisy = vant.create_model("lenet5")
    noisy.load_state_dict(clean.state_dict())
    vant.inject_noise_(noisy)
    vant.set_sigma_(noisy, torch.ones(4))
    ref = compile_noisy(clean, backend=backend)(x)
    assert not torch.equal(compile_noisy(noisy, backend=backend)(x), ref)
    assert len(graphs) == 2
    vant.set_sigma_(noisy, 0.0)  # silent sites: a graph without noise, equal to the clean one
    assert torch.equal(compile_noisy(noisy, backend=backend)(x), ref)


def test_eager_additive_equals_its_formula_and_leaves_input_alone():
    for x in (torch.randn(6, 5, 7, 7), torch.randn(6, 5, 7, 7).contiguous(memory_format=torch.channels_last),
              torch.randn(6, 5, 7, 7, dtype=torch.bfloat16)):
        s = torch.rand(6)
        x0 = x.clone()
        torch.manual_seed(3)
        y = additive(x, s)
        torch.manual_seed(3)
        ref = (x.float() + s.view(-1, 1, 1, 1) * torch.randn(x.shape)).to(x.dtype)
        assert torch.equal(x, x0) and y.dtype == x.dtype and y.shape == x.shape
        torch.testing.assert_close(y, ref)


def test_training_with_compile_matches_eager_training(tmp_path, monkeypatch, noise_threads):
    """train.compile=true runs the loop through compile_noisy (here with the cheap aot_eager backend:
    the same graphs and autograd, no code generation) and trains like the eager loop."""
    import vant.core.noise
    import vant.pipeline.train
    from tests.helpers import tiny_config
    from vant.pipeline.runs import execute

    calls = []

    def cheap(model, device):
        calls.append(device)
        return compile_noisy(model, device, backend="aot_eager")

    monkeypatch.setattr(vant.pipeline.train, "compile_noisy", cheap)
    noise_threads(1)
    # the compiled CPU graph draws each site with one torch.randn; eager splits sites of >= 2**18 values
    # into seeded chunks (thread-independent): without the split both draw the same noise values
    monkeypatch.setattr(vant.core.noise, "_PARALLEL_MIN", 1 << 62)
    torch._dynamo.reset()
    compiled = execute(tiny_config(tmp_path / "c", "train.compile=true", "train.epochs=1"), progress=False)
    eager = execute(tiny_config(tmp_path / "e", "train.epochs=1"), progress=False)
    assert calls
    a, b = compiled.epochs()[-1], eager.epochs()[-1]
    # Same init, data, sigma stream and noise stream (aot_eager keeps ATen's generator and draws in
    # the same order), so the same training up to floating-point rounding.
    assert a["sigma_mean"] == b["sigma_mean"]
    assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 * b["train_loss"]
    assert abs(a["train_acc"] - b["train_acc"]) < 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_noise_has_the_eager_distribution():
    """On CUDA inductor draws the noise inside the Triton kernels (Philox); eager uses cuRAND's."""
    torch._dynamo.reset()
    torch.manual_seed(2)
    sig = SIGMA_ROWS.cuda()
    x = torch.zeros(32, 8, 32, 32, device="cuda")
    for dtype in (torch.float32, torch.bfloat16):
        model = _probe().cuda()
        vant.set_sigma_(model, sig)
        compiled = compile_noisy(model, "cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            for forward in (model, compiled):
                draws = [d.cpu() for d in _draws(forward, x.to(dtype), calls=2)]
                if dtype == torch.float32:
                    check_standard_normal_iid(draws, SIGMA_ROWS)
                else:  # bf16 output: 8 bits of mantissa, so only mean and spread
                    z = torch.cat([(d / SIGMA_ROWS.view(-1, 1, 1, 1)).flatten() for d in draws]).double()
                    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01


def test_epoch_augmentation_drawn_up_front_matches_per_batch_slices():
    """The epoch's crop offsets and flips are drawn at once (no host-to-device copy per batch); batch
    k must get exactly the slice of them that belongs to its images, the last, short batch too."""
    from vant.data import DeviceBatches, crop_flip, crop_flip_params

    x = torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(10)
    batches = DeviceBatches(x, y, (0.5,) * 3, (0.25,) * 3, 4, torch.device("cpu"), train=True, augment=True,
                            flip=True, pad=2, seed=7)
    got = list(batches.epoch(3))
    assert [len(b) for b, _ in got] == [4, 4, 2]
    g = torch.Generator().manual_seed(7 * 1_000_003 + 3)
    order = torch.randperm(10, generator=g)
    expected = crop_flip(x[order], 2, *crop_flip_params(10, 2, True, g, torch.device("cpu")))
    assert torch.equal(torch.cat([b for b, _ in got]), batches.normalise(expected))
    assert torch.equal(torch.cat([t for _, t in got]), y[order])


@pytest.mark.parametrize("threads", [2, 3])
def test_multithreaded_cpu_draw_is_iid_normal_and_reproducible(noise_threads, threads):
    """Large CPU draws are split into fixed-size chunks, each from its own seeded stream, shared out
    over the threads: still i.i.d. N(0, 1) (chunks uncorrelated with each other), and reproducible
    from torch.manual_seed."""
    from vant.core.noise import _CHUNK, normal_

    noise_threads(threads)
    x = torch.zeros(32, 16, 32, 32)  # 524,288 values per draw: above the 2**18 split threshold
    torch.manual_seed(3)
    model = _probe()
    vant.set_sigma_(model, SIGMA_ROWS)
    draws = _draws(model, x, calls=1)
    check_standard_normal_iid(draws, SIGMA_ROWS)
    flat = draws[0].flatten()
    chunks = flat.view(-1, _CHUNK)  # 524,288 = 4 chunks
    corr = torch.corrcoef(chunks.double())
    assert corr[~torch.eye(len(chunks), dtype=torch.bool)].abs().max() < 5 / math.sqrt(chunks.shape[1])
    torch.manual_seed(3)
    again = _draws(model, x, calls=1)
    assert all(torch.equal(a, b) for a, b in zip(draws, again))
    torch.manual_seed(4)
    assert not torch.equal(normal_(torch.empty(1 << 18)), normal_(torch.empty(1 << 18)))


def test_small_draws_are_the_single_stream_and_one_noise_thread_draws_what_two_do(noise_threads):
    s = torch.tensor(0.5)
    small = torch.randn(8, 16, 16, 16)  # 32,768 values: below the split threshold, one stream
    torch.manual_seed(7)
    got = additive(small, s)
    torch.manual_seed(7)
    assert torch.equal(got, small + s * torch.empty_like(small).normal_())
    x = torch.randn(8, 64, 32, 32)  # 524,288 values: split into chunks, the same whatever the threads
    out = []
    for k in (1, 2):
        noise_threads(k)
        torch.manual_seed(7)
        out.append(additive(x, s))
    assert torch.equal(*out)
    with pytest.raises(ValueError, match="positive integer"):
        noise_threads(0)


def test_multithreaded_draw_works_in_a_forked_child(noise_threads):
    """A thread pool made before a fork has no threads in the child; the child must make its own."""
    import multiprocessing

    from vant.core.noise import normal_

    noise_threads(2)
    normal_(torch.empty(1 << 18))  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def child(q):  # no OpenMP op in the child: libgomp itself may hang after a fork, whatever vant does
        q.put(float(normal_(torch.empty(1 << 19)).numpy().std()))

    p = ctx.Process(target=child, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0, "the child hung or failed drawing noise"
    assert abs(q.get(timeout=5) - 1) < 0.01
