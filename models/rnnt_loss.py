"""Transducer (RNN-T) loss in plain PyTorch, so that training needs no torchaudio.

The lattice and its forward-backward algorithm follow Graves 2012, "Sequence Transduction with
Recurrent Neural Networks" (arXiv:1211.3711): node (t, u) means "t frames consumed, u labels
emitted"; from it a blank moves to (t+1, u) and the label y_{u+1} moves to (t, u+1). The
forward variables are

    alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + y(t, u-1))

the backward variables beta mirror them, -log P(y|x) = -(alpha(T-1, U) + blank(T-1, U)), and
the gradient is the softmax times each node's occupancy minus each transition's posterior.

Implementation notes:
- Only the blank and target-label log-probs, (B, T, U+1) and (B, T, U), enter the dynamic
  programme; the V axis is touched once (logsumexp) in forward and once (the softmax that
  becomes the gradient buffer) in backward.
- The loop runs over t only. For a fixed t the recursion along u is linear in the log
  semiring, so it has a closed form with a cumulative sum C(u) = sum_{k<u} y(t, k):
      alpha(t, u) = C(u) + logcumsumexp_k(alpha(t-1, k) + blank(t-1, k) - C(k)).
- The dynamic programme runs in float64: the tensors are small (no V axis) and the cumulative
  sums above subtract numbers of a few hundred nats, where float32 would lose ~1e-5 nats.
- A hand-written backward (instead of autograd through the loop) keeps memory to one gradient
  buffer of size B*T*(U+1)*V and avoids NaNs from -inf - -inf in logcumsumexp's backward.
"""

from __future__ import annotations

import torch

# Finite stand-in for log(0): exp() of it is exactly 0 and differences of two of them stay
# finite, unlike -inf - -inf = NaN.
_NEG = -1.0e30
_DP_DTYPE = torch.float64


def _check_inputs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got shape {tuple(logits.shape)}")
    b, t, u1, v = logits.shape
    if targets.dim() != 2 or targets.shape != (b, u1 - 1):
        raise ValueError(f"targets must be (B, U) = ({b}, {u1 - 1}), got {tuple(targets.shape)}")
    if logit_lengths.shape != (b,) or target_lengths.shape != (b,):
        raise ValueError("logit_lengths and target_lengths must both be (B,)")
    if not 0 <= blank < v:
        raise ValueError(f"blank={blank} outside the vocabulary of size {v}")
    if b == 0:
        return
    # A sequence needs at least one frame: its final blank is emitted at frame T_b - 1.
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > t:
        raise ValueError(f"logit_lengths must lie in [1, {t}]")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > u1 - 1:
        raise ValueError(f"target_lengths must lie in [0, {u1 - 1}]")


def _alphas(blank_lp: torch.Tensor, label_lp: torch.Tensor) -> torch.Tensor:
    """Forward variables alpha (B, T, U+1) of Graves 2012, one frame at a time."""
    b, t_max, u1 = blank_lp.shape
    # c[:, t, u] = sum_{k<u} label_lp[:, t, k]: the cost of emitting labels 0..u-1 within frame t.
    c = torch.cat([blank_lp.new_zeros(b, t_max, 1), label_lp.cumsum(-1)], dim=-1)
    alpha = blank_lp.new_empty(b, t_max, u1)
    alpha[:, 0] = c[:, 0]  # alpha(0, 0) = 0 and frame 0 can only be entered by labels
    for t in range(1, t_max):
        a = alpha[:, t - 1] + blank_lp[:, t - 1]  # arrive at (t, k) by a blank from (t-1, k)
        ct = c[:, t]
        alpha[:, t] = ct + torch.logcumsumexp(a - ct, dim=-1)  # then k -> u by labels
    return alpha


def _betas(
    blank_lp: torch.Tensor,
    label_lp: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward variables beta of Graves 2012, mirror image of `_alphas`.

    Returns (beta, beta_after_blank), both (B, T, U+1): beta[:, t] = beta(t, .), and
    beta_after_blank[:, t] = the beta of the node a blank at frame t leads to, i.e. beta(t+1, .)
    or, at each sequence's last frame, the terminal state (0 at u = U_b, log 0 elsewhere).
    """
    b, t_max, u1 = blank_lp.shape
    # d[:, t, u] = sum_{k>=u} label_lp[:, t, k], so sum_{k=u}^{j-1} = d(u) - d(j).
    d = torch.cat([label_lp.flip(-1).cumsum(-1).flip(-1), blank_lp.new_zeros(b, t_max, 1)], dim=-1)
    terminal = blank_lp.new_full((b, u1), _NEG)
    terminal[torch.arange(b, device=blank_lp.device), target_lengths] = 0.0
    beta = blank_lp.new_empty(b, t_max, u1)
    after_blank = blank_lp.new_empty(b, t_max, u1)
    nxt = blank_lp.new_full((b, u1), _NEG)  # frames past every sequence's end: unreachable
    for t in range(t_max - 1, -1, -1):
        # Each sequence starts its backward pass at its own last frame T_b - 1.
        nxt = torch.where((logit_lengths == t + 1).unsqueeze(-1), terminal, nxt)
        after_blank[:, t] = nxt
        bb = nxt + blank_lp[:, t]  # leave (t, j) by a blank
        dt = d[:, t]
        # beta(t, u) = d(u) + log sum_{j>=u} exp(bb(j) - d(j)): labels u..j-1, then that blank.
        nxt = dt + torch.logcumsumexp((bb - dt).flip(-1), dim=-1).flip(-1)
        beta[:, t] = nxt
    return beta, after_blank


class _RNNTLossFunction(torch.autograd.Function):
    """Per-sequence transducer negative log-likelihood, shape (B,)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        logit_lengths: torch.Tensor,
        target_lengths: torch.Tensor,
        blank: int,
    ) -> torch.Tensor:
        b, t_max, u1, _ = logits.shape
        u_max = u1 - 1
        dev = logits.device
        logit_lengths = logit_lengths.to(device=dev, dtype=torch.long)
        target_lengths = target_lengths.to(device=dev, dtype=torch.long)

        # Padded target slots may hold anything (even -1): point them at `blank` so gather is
        # in range; their log-probs are zeroed below and their gradients masked out.
        label_pad = torch.arange(u_max, device=dev) >= target_lengths.unsqueeze(-1)  # (B, U)
        tgt = targets.to(device=dev, dtype=torch.long).masked_fill(label_pad, blank)

        lse = torch.logsumexp(logits, dim=-1)  # (B, T, U+1): log_softmax = logits - lse
        blank_lp = (logits[..., blank] - lse).to(_DP_DTYPE)
        idx = tgt[:, None, :, None].expand(b, t_max, u_max, 1)
        label_lp = logits[:, :, :u_max].gather(-1, idx).squeeze(-1) - lse[:, :, :u_max]
        label_lp = label_lp.to(_DP_DTYPE)

        # Zero every cell outside a sequence's own (T_b, U_b) lattice, so garbage there cannot
        # leak into the cumulative sums (it would cancel mathematically, but not in floats).
        frame_ok = torch.arange(t_max, device=dev) < logit_lengths.unsqueeze(-1)  # (B, T)
        node_ok = torch.arange(u1, device=dev) <= target_lengths.unsqueeze(-1)  # (B, U+1)
        blank_ok = frame_ok.unsqueeze(-1) & node_ok.unsqueeze(1)  # (B, T, U+1)
        label_ok = frame_ok.unsqueeze(-1) & ~label_pad.unsqueeze(1)  # (B, T, U)
        blank_lp = blank_lp.masked_fill(~blank_ok, 0.0)
        label_lp = label_lp.masked_fill(~label_ok, 0.0)

        alpha = _alphas(blank_lp, label_lp)
        ar = torch.arange(b, device=dev)
        last = logit_lengths - 1
        log_p = alpha[ar, last, target_lengths] + blank_lp[ar, last, target_lengths]

        ctx.blank = blank
        ctx.save_for_backward(
            logits,
            lse,
            tgt,
            logit_lengths,
            target_lengths,
            blank_lp,
            label_lp,
            alpha,
            log_p,
            blank_ok,
            label_ok,
        )
        return (-log_p).to(logits.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        (
            logits,
            lse,
            tgt,
            logit_lengths,
            target_lengths,
            blank_lp,
            label_lp,
            alpha,
            log_p,
            blank_ok,
            label_ok,
        ) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        blank = ctx.blank
        u_max = logits.shape[2] - 1

        beta, after_blank = _betas(blank_lp, label_lp, logit_lengths, target_lengths)
        norm = log_p[:, None, None]
        # Posterior probability of each transition (Graves 2012): alpha at its
        # source + its log-prob + beta at its destination - log P.
        p_blank = torch.exp(alpha + blank_lp + after_blank - norm)
        p_label = torch.exp(alpha[:, :, :u_max] + label_lp + beta[:, :, 1:] - norm)
        g = grad_out.to(_DP_DTYPE)[:, None, None]  # chain rule for the loss -log P
        p_blank = (p_blank * g).masked_fill(~blank_ok, 0.0)
        p_label = (p_label * g).masked_fill(~label_ok, 0.0)
        # Node occupancy = total posterior of leaving (t, u); it multiplies the softmax
        # (d(-log P)/dz_k = softmax_k * occupancy - posterior of the transition via k).
        occupancy = p_blank.clone()
        occupancy[:, :, :u_max] += p_label

        dtype = logits.dtype
        grad = torch.sub(logits, lse.unsqueeze(-1)).exp_()  # softmax; the one V-sized buffer
        grad.mul_(occupancy.to(dtype).unsqueeze(-1))
        grad[..., blank].sub_(p_blank.to(dtype))
        b, t_max = logits.shape[:2]
        idx = tgt[:, None, :, None].expand(b, t_max, u_max, 1)
        grad[:, :, :u_max].scatter_add_(-1, idx, -p_label.to(dtype).unsqueeze(-1))
        if not bool(blank_ok.all()):
            # softmax * 0 is NaN where padded logits are inf/NaN (e.g. overflowed fp16 joiner
            # outputs); padded cells must contribute exactly nothing.
            grad.masked_fill_(~blank_ok.unsqueeze(-1), 0.0)
        return grad, None, None, None, None


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Transducer negative log-likelihood (Graves 2012), differentiable w.r.t. `logits`.

    Args:
        logits: (B, T, U+1, V) raw joiner outputs (log_softmax is applied here).
        targets: (B, U) int64 label ids, padded past each `target_lengths[b]` with anything.
        logit_lengths: (B,) valid frames per sequence, in [1, T].
        target_lengths: (B,) valid labels per sequence, in [0, U].
        blank: id of the blank symbol.
        reduction: "mean" (mean over the batch of per-sequence losses), "sum" or "none".

    Returns:
        A scalar, or the (B,) per-sequence losses for reduction="none". Cells outside each
        sequence's own (T_b, U_b + 1) lattice affect neither the loss nor the gradient (their
        gradient is exactly zero).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    _check_inputs(logits, targets, logit_lengths, target_lengths, blank)
    losses = _RNNTLossFunction.apply(logits, targets, logit_lengths, target_lengths, blank)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
