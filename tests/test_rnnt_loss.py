"""Tests for edge_asr.models.rnnt_loss against brute-force enumeration of alignments.

Run `python tests/test_rnnt_loss.py` for a forward+backward micro-benchmark.
"""

from __future__ import annotations

import itertools
import time

import pytest
import torch

from edge_asr.models.rnnt_loss import rnnt_loss


def brute_force_nll(
    logits: torch.Tensor, targets: torch.Tensor, t_len: int, u_len: int, blank: int
) -> torch.Tensor:
    """-log P(y|x) by summing over every alignment of one (unpadded-lengths) sequence.

    An alignment is an ordering of T_b blanks and U_b labels whose last symbol is a blank at
    frame T_b - 1; a blank at node (t, u) moves to (t+1, u), a label to (t, u+1).
    """
    lp = torch.log_softmax(logits[:t_len, : u_len + 1], dim=-1)
    n = t_len - 1 + u_len  # symbols before the mandatory final blank
    paths = []
    for label_slots in itertools.combinations(range(n), u_len):
        t, u, score = 0, 0, lp.new_zeros(())
        for i in range(n):
            if i in label_slots:
                score = score + lp[t, u, targets[u]]
                u += 1
            else:
                score = score + lp[t, u, blank]
                t += 1
        assert (t, u) == (t_len - 1, u_len)
        paths.append(score + lp[t, u, blank])
    return -torch.logsumexp(torch.stack(paths), dim=0)


def simple_dp_nll(
    logits: torch.Tensor, targets: torch.Tensor, t_len: int, u_len: int, blank: int
) -> float:
    """The textbook O(T*U) double loop, for lattices too large to enumerate."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    alpha = torch.full((t_len, u_len + 1), float("-inf"), dtype=torch.float64)
    for t in range(t_len):
        for u in range(u_len + 1):
            if t == 0 and u == 0:
                alpha[t, u] = 0.0
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1, u] + lp[t - 1, u, blank])
            if u > 0:
                terms.append(alpha[t, u - 1] + lp[t, u - 1, targets[u - 1]])
            alpha[t, u] = torch.logsumexp(torch.stack(terms), dim=0)
    return -float(alpha[t_len - 1, u_len] + lp[t_len - 1, u_len, blank])


def random_batch(
    seed: int,
    t_lens: list[int],
    u_lens: list[int],
    v: int,
    blank: int = 0,
    dtype: torch.dtype = torch.float64,
    scale: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded batch; padding of targets is a non-blank in-range label, of logits random."""
    g = torch.Generator().manual_seed(seed)
    b, t_max, u_max = len(t_lens), max(t_lens), max(u_lens)
    logits = (torch.randn(b, t_max, u_max + 1, v, generator=g) * scale).to(dtype)
    labels = [i for i in range(v) if i != blank]
    pick = torch.randint(len(labels), (b, u_max), generator=g)
    targets = torch.tensor(labels)[pick]
    return (
        logits,
        targets,
        torch.tensor(t_lens, dtype=torch.long),
        torch.tensor(u_lens, dtype=torch.long),
    )


def brute_force_batch(logits, targets, t_lens, u_lens, blank):
    return torch.stack(
        [
            brute_force_nll(logits[i], targets[i], int(t_lens[i]), int(u_lens[i]), blank)
            for i in range(logits.shape[0])
        ]
    )


# (T_b per sequence, U_b per sequence, V, blank): T <= 4, U <= 3, V <= 5, mixed lengths.
SMALL_CASES = [
    ([1], [0], 2, 0),
    ([1], [3], 3, 0),
    ([4], [0], 4, 0),
    ([4], [3], 5, 0),
    ([3, 1, 4, 2], [2, 3, 0, 1], 5, 0),
    ([4, 4, 2], [3, 1, 3], 4, 2),  # blank not at id 0
    ([2, 3], [1, 1], 5, 4),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t_lens,u_lens,v,blank", SMALL_CASES)
def test_matches_brute_force_value_and_grad(seed, t_lens, u_lens, v, blank):
    logits, targets, tl, ul = random_batch(seed, t_lens, u_lens, v, blank)

    ours_in = logits.clone().requires_grad_(True)
    ours = rnnt_loss(ours_in, targets, tl, ul, blank=blank, reduction="none")
    ref_in = logits.clone().requires_grad_(True)
    ref = brute_force_batch(ref_in, targets, tl, ul, blank)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)

    # A random weighting per sequence exercises the incoming gradient of reduction="none".
    w = torch.rand(len(t_lens), generator=torch.Generator().manual_seed(seed), dtype=ours.dtype)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_simple_dp_on_larger_lattices(seed):
    t_lens, u_lens = [12, 7, 9], [6, 9, 0]
    logits, targets, tl, ul = random_batch(seed, t_lens, u_lens, 7, scale=4.0)
    ours = rnnt_loss(logits, targets, tl, ul, reduction="none")
    for i in range(3):
        ref = simple_dp_nll(logits[i], targets[i], t_lens[i], u_lens[i], 0)
        assert abs(float(ours[i]) - ref) < 1e-9


def test_gradcheck():
    logits, targets, tl, ul = random_batch(3, [3, 2], [2, 1], 4)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, tl, ul, reduction="sum"), (logits,)
    )


def test_float32_close_to_float64():
    logits, targets, tl, ul = random_batch(4, [30, 20], [12, 15], 40, scale=5.0)
    x64 = logits.clone().requires_grad_(True)
    x32 = logits.float().requires_grad_(True)
    l64 = rnnt_loss(x64, targets, tl, ul, reduction="sum")
    l32 = rnnt_loss(x32, targets, tl, ul, reduction="sum")
    assert l32.dtype == torch.float32
    l64.backward()
    l32.backward()
    assert abs(l32.item() - l64.item()) < 1e-5 * abs(l64.item())
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=0, atol=1e-5)


def test_padding_invariance():
    t_lens, u_lens, v = [4, 2, 3], [1, 3, 0], 5
    logits, targets, tl, ul = random_batch(7, t_lens, u_lens, v)
    x = logits.clone().requires_grad_(True)
    loss = rnnt_loss(x, targets, tl, ul, reduction="none")
    loss.sum().backward()

    # Garbage in every padded cell: large logits, out-of-range and negative target ids.
    g = torch.Generator().manual_seed(99)
    dirty = logits.clone()
    dirty_targets = targets.clone()
    for i, (t_b, u_b) in enumerate(zip(t_lens, u_lens, strict=True)):
        dirty[i, t_b:] = torch.randn(dirty[i, t_b:].shape, generator=g, dtype=dirty.dtype) * 50
        dirty[i, :, u_b + 1 :] = 1e4
        dirty_targets[i, u_b:] = torch.randint(-3, 3 * v, (len(targets[i, u_b:]),), generator=g)
    dirty[0, 3, 2, 1] = float("nan")  # non-finite joiner outputs in padding must not leak
    dirty[1, 3, 0, 0] = float("inf")
    dirty[2, 1, 1, 2] = float("-inf")
    y = dirty.requires_grad_(True)
    dirty_loss = rnnt_loss(y, dirty_targets, tl, ul, reduction="none")
    dirty_loss.sum().backward()

    torch.testing.assert_close(dirty_loss, loss, rtol=0, atol=0)
    torch.testing.assert_close(y.grad, x.grad, rtol=0, atol=0)
    for i, (t_b, u_b) in enumerate(zip(t_lens, u_lens, strict=True)):
        assert torch.all(x.grad[i, t_b:] == 0) and torch.all(x.grad[i, :, u_b + 1 :] == 0)
        # Each sequence alone, without padding, gives the same loss and gradient.
        xi = logits[i : i + 1, :t_b, : u_b + 1].clone().requires_grad_(True)
        li = rnnt_loss(xi, targets[i : i + 1, :u_b], tl[i : i + 1], ul[i : i + 1], reduction="sum")
        li.backward()
        torch.testing.assert_close(li, loss[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(xi.grad[0], x.grad[i, :t_b, : u_b + 1], rtol=0, atol=1e-12)


def test_reductions():
    logits, targets, tl, ul = random_batch(5, [3, 4, 2], [2, 0, 3], 5)
    none = rnnt_loss(logits, targets, tl, ul, reduction="none")
    assert none.shape == (3,) and torch.all(none > 0)
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul), none.mean())
    torch.testing.assert_close(rnnt_loss(logits, targets, tl, ul, reduction="sum"), none.sum())

    # The gradient of "mean" is the gradient of "sum" divided by the batch size.
    xm = logits.clone().requires_grad_(True)
    xs = logits.clone().requires_grad_(True)
    rnnt_loss(xm, targets, tl, ul, reduction="mean").backward()
    rnnt_loss(xs, targets, tl, ul, reduction="sum").backward()
    torch.testing.assert_close(xm.grad * 3, xs.grad)

    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, tl, ul, reduction="max")


def test_rejects_bad_lengths():
    logits, targets, tl, ul = random_batch(6, [3, 2], [2, 1], 4)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, torch.tensor([0, 2]), ul)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, torch.tensor([4, 2]), ul)
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, tl, torch.tensor([3, 1]))


def greedy_decode(logits: torch.Tensor, blank: int, max_symbols_per_frame: int = 10) -> list[int]:
    """Greedy transducer search over a fixed (T, U+1, V) logit lattice."""
    t_max, u1, _ = logits.shape
    out: list[int] = []
    for t in range(t_max):
        for _ in range(max_symbols_per_frame):
            if len(out) >= u1 - 1:
                break
            k = int(logits[t, len(out)].argmax())
            if k == blank:
                break
            out.append(k)
    return out


def test_training_on_free_logits_reaches_target():
    torch.manual_seed(0)
    target = [3, 1, 4, 1]
    t_max, v = 6, 6
    x = torch.nn.Parameter(torch.randn(1, t_max, len(target) + 1, v) * 0.1)
    targets = torch.tensor([target])
    tl, ul = torch.tensor([t_max]), torch.tensor([len(target)])
    opt = torch.optim.Adam([x], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        loss = rnnt_loss(x, targets, tl, ul)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert greedy_decode(x.detach()[0], blank=0) == target


def _benchmark(b: int = 32, t: int = 80, u: int = 30, v: int = 256, reps: int = 5) -> None:
    torch.manual_seed(0)
    logits = torch.randn(b, t, u + 1, v, requires_grad=True)
    targets = torch.randint(1, v, (b, u))
    tl = torch.randint(t // 2, t + 1, (b,))
    tl[0] = t
    ul = torch.randint(u // 2, u + 1, (b,))
    ul[0] = u
    times = []
    for _ in range(reps + 1):
        logits.grad = None
        start = time.perf_counter()
        rnnt_loss(logits, targets, tl, ul).backward()
        times.append(time.perf_counter() - start)
    best = min(times[1:])  # the first run warms up the allocator
    print(
        f"rnnt_loss B={b} T={t} U={u} V={v} float32, {torch.get_num_threads()} thread(s): "
        f"forward+backward {best * 1e3:.1f} ms (best of {reps})"
    )


if __name__ == "__main__":
    _benchmark()
