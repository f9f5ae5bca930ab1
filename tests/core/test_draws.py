"""The CPU draw of a large noise site (vant.core.noise.normal_): fixed-size chunks with per-chunk
seeds, so the values depend on the number of values and the default generator only, never on how
many threads draw them (spec, issue 12: determinism that does not depend on threads or executors)."""
import pytest
import torch

from vant.core.noise import _CHUNK, _PARALLEL_MIN, normal_, set_cpu_noise_threads

N = 3 * 2**18 + 5  # several chunks and a short last one


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    set_cpu_noise_threads(None)
    torch.set_num_threads(before)


def draw(seed: int, n: int = N) -> torch.Tensor:
    torch.manual_seed(seed)
    return normal_(torch.empty(n))


def test_split_draw_is_the_same_for_every_thread_count(threads):
    assert N >= _PARALLEL_MIN and N % _CHUNK != 0
    ref = draw(5)
    for k in (1, 2, 3, None):
        set_cpu_noise_threads(k)
        for torch_threads in (1, 2):
            torch.set_num_threads(torch_threads)
            assert torch.equal(draw(5), ref), (k, torch_threads)
    assert not torch.equal(draw(6), ref)
    assert abs(ref.mean().item()) < 5 / N**0.5 and abs(ref.std().item() - 1) < 5 / (2 * N) ** 0.5


def test_split_draw_takes_one_value_of_the_default_generator(threads):
    """One default-generator draw per call: manual_seed reproduces it, fork_rng isolates it, and the
    values after it are those after one randint, whatever the thread count."""
    for k in (1, 2):
        set_cpu_noise_threads(k)
        torch.manual_seed(9)
        normal_(torch.empty(N))
        after = torch.rand(4)
        torch.manual_seed(9)
        torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64)
        assert torch.equal(after, torch.rand(4))
    torch.manual_seed(3)
    with torch.random.fork_rng(devices=[]):
        normal_(torch.empty(N))
    assert torch.equal(torch.rand(4), (torch.manual_seed(3), torch.rand(4))[1])


def test_chunks_are_distinct_streams_and_calls_fresh(threads):
    torch.manual_seed(1)
    a, b = normal_(torch.empty(4 * _CHUNK)), normal_(torch.empty(4 * _CHUNK))
    chunks = torch.cat([a, b]).view(8, _CHUNK).double()
    corr = torch.corrcoef(chunks)
    assert corr[~torch.eye(8, dtype=torch.bool)].abs().max() < 5 / _CHUNK**0.5
    assert len({c[:8].tolist().__repr__() for c in chunks}) == 8


def test_small_and_non_contiguous_draws_are_tensor_normal(threads):
    set_cpu_noise_threads(2)
    for make in (lambda: torch.empty(_PARALLEL_MIN - 1), lambda: torch.empty(2 * N)[::2]):
        torch.manual_seed(4)
        got = normal_(make())
        torch.manual_seed(4)
        assert torch.equal(got, make().normal_())
