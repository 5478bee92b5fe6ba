"""The mLSTM sequence mixing of Vision-LSTM, in three forms that compute the same function.

Per batch element and head, with ``l_t = logsigmoid(f_t)`` and the key scale ``s = DH ** -0.5``::

    w_tj = (q_t . k_j) * s * exp(i_j + l_{j+1} + ... + l_t)          for j <= t, else 0
    h_t  = sum_j w_tj v_j / (max(|sum_j w_tj|, 1) + eps * exp(m_t))

where ``m_t = max_j (i_j + l_{j+1} + ... + l_t)`` is the stabiliser of the original code (ViL's
``parallel_stabilized_simple``). The stabiliser only enters through ``eps``, but it does enter, so every
backend below reproduces it exactly.

Backends:

* ``"parallel"``: the stabilised quadratic form, as in the original ViL code. O(S^2) time and memory.
* ``"chunkwise"`` (default): the same function in O(S) time and memory, forward and backward. Inside a
  chunk of ``chunk_size`` tokens it is the parallel form; between chunks a recurrent state ``(C, n, m)``
  carries the past, stabilised in log space with ``m_0 = -inf`` (exact parity with the parallel form).
  Everything is batched over chunks; the only Python loop runs over the (DH x DH) chunk states.
* ``"recurrent"``: one token at a time. Slow and obviously correct; a reference for tests.

The chunkwise and recurrent backends also take and return the recurrent state (:class:`MLSTMState`), so a
long sequence can be processed segment by segment: ``mlstm(a + b) == cat(mlstm(a), mlstm(b, state))``.

Gate math and cumulative sums run in at least float32 (float64 inputs stay float64); the result has the
dtype of ``q``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["BACKENDS", "Backend", "MLSTMState", "mlstm"]

Backend = Literal["chunkwise", "parallel", "recurrent"]
BACKENDS: tuple[str, ...] = ("chunkwise", "parallel", "recurrent")


class MLSTMState(NamedTuple):
    """The recurrent state after a sequence, stabilised: the true matrix memory is ``c * exp(m)``.

    ``c`` (B, NH, DH, DHV), ``n`` (B, NH, DH) (the normaliser's key sum, also times ``exp(-m)``) and ``m``
    (B, NH), all in the compute dtype (at least float32). ``m`` is ``-inf`` for "nothing seen yet".
    """

    c: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate_preact: torch.Tensor,
    fgate_preact: torch.Tensor,
    *,
    backend: Backend = "chunkwise",
    chunk_size: int = 64,
    eps: float = 1e-6,
    initial_state: MLSTMState | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, MLSTMState]:
    """Apply the mLSTM cell to whole sequences.

    Args:
        q, k: queries and keys, ``(B, NH, S, DH)``. Keys are scaled by ``DH ** -0.5`` inside.
        v: values, ``(B, NH, S, DHV)``.
        igate_preact, fgate_preact: input / forget gate pre-activations, ``(B, NH, S)`` or ``(B, NH, S, 1)``.
        backend: ``"chunkwise"`` (linear time and memory), ``"parallel"`` (quadratic, the original code's
            form) or ``"recurrent"`` (token by token).
        chunk_size: tokens per chunk for ``"chunkwise"``; any S is accepted (the tail chunk is padded).
        eps: the normaliser's epsilon.
        initial_state: the state a previous call returned, to continue its sequence (chunkwise and
            recurrent backends); ``None`` starts from zero.
        return_state: also return the state after the last token.

    Returns:
        ``(B, NH, S, DHV)`` hidden states in the dtype of ``q``; with ``return_state``, also the
        :class:`MLSTMState`.
    """
    igate, fgate = _check_inputs(q, k, v, igate_preact, fgate_preact, backend, chunk_size)
    if backend == "parallel" and (initial_state is not None or return_state):
        raise ValueError("the parallel backend keeps no state; use backend='chunkwise' or 'recurrent'")
    out_dtype = q.dtype
    compute_dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, v, igate, fgate = (t.to(compute_dtype) for t in (q, k, v, igate, fgate))
    state = None if initial_state is None else _check_state(initial_state, q, v, compute_dtype)
    key_scale = q.shape[-1] ** -0.5
    if backend == "parallel":
        h = _parallel(q, k * key_scale, v, igate, fgate, eps)
    elif backend == "recurrent":
        h, state = _recurrent(q, k * key_scale, v, igate, fgate, eps, state)
    else:  # the key scale goes into the chunkwise form's decay factors: no pass over k
        h, state = _chunkwise(q, k, v, igate, fgate, key_scale, chunk_size, eps, state, return_state)
    return (h.to(out_dtype), state) if return_state else h.to(out_dtype)


def _check_state(state: MLSTMState, q: torch.Tensor, v: torch.Tensor, dtype: torch.dtype) -> MLSTMState:
    batch, heads, _, head_dim = q.shape
    expected = {
        "c": (batch, heads, head_dim, v.shape[-1]),
        "n": (batch, heads, head_dim),
        "m": (batch, heads),
    }
    if not isinstance(state, tuple) or len(state) != 3:
        raise TypeError(f"initial_state must be an MLSTMState (c, n, m), got {type(state).__name__}")
    state = MLSTMState(*state)
    for name, shape in expected.items():
        got = tuple(getattr(state, name).shape)
        if got != shape:
            raise ValueError(f"initial_state.{name} must have shape {shape} for these inputs, got {got}")
    return MLSTMState(*(t.to(dtype) for t in state))


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    igate_preact: torch.Tensor,
    fgate_preact: torch.Tensor,
    backend: str,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown mLSTM backend {backend!r}; expected one of {BACKENDS}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if q.ndim != 4:
        raise ValueError(f"q must be (B, NH, S, DH), got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must be (B, NH, S, DHV) with (B, NH, S) = {tuple(q.shape[:3])}, got {tuple(v.shape)}"
        )
    gates = []
    for name, gate in (("igate_preact", igate_preact), ("fgate_preact", fgate_preact)):
        if gate.ndim == 4 and gate.shape[-1] == 1:
            gate = gate.squeeze(-1)
        if gate.shape != q.shape[:3]:
            raise ValueError(
                f"{name} must be (B, NH, S) or (B, NH, S, 1) with (B, NH, S) = {tuple(q.shape[:3])}, "
                f"got {tuple(gate.shape)}"
            )
        gates.append(gate)
    return gates[0], gates[1]


def _causal_log_decay(cum_log_f: torch.Tensor, igate: torch.Tensor) -> torch.Tensor:
    """``log D[t, j] = F_t - F_j + i_j`` for ``j <= t``, ``-inf`` above the diagonal.

    ``cum_log_f`` and ``igate`` are ``(..., T)``; the result is ``(..., T, T)``.
    """
    size = cum_log_f.shape[-1]
    log_d = cum_log_f[..., :, None] - cum_log_f[..., None, :] + igate[..., None, :]
    causal = torch.ones(size, size, dtype=torch.bool, device=log_d.device).tril()
    return log_d.masked_fill(~causal, -math.inf)


def _parallel(q, k, v, igate, fgate, eps):
    log_d = _causal_log_decay(F.logsigmoid(fgate).cumsum(-1), igate)  # (B, NH, S, S)
    m = log_d.amax(-1, keepdim=True)
    weights = (q @ k.transpose(-1, -2)) * torch.exp(log_d - m)
    normaliser = torch.maximum(weights.sum(-1, keepdim=True).abs(), torch.exp(-m))
    return (weights @ v) / (normaliser + eps)


def _recurrent(q, k, v, igate, fgate, eps, state):
    batch, heads, seq_len, head_dim = q.shape
    log_f = F.logsigmoid(fgate)
    if state is None:
        c_state = q.new_zeros(batch, heads, head_dim, v.shape[-1])
        n_state = q.new_zeros(batch, heads, head_dim)
        m_state = q.new_full((batch, heads), -math.inf)
    else:
        c_state, n_state, m_state = state
    outputs = []
    for t in range(seq_len):
        m_new = torch.maximum(log_f[..., t] + m_state, igate[..., t])
        decay = torch.exp(log_f[..., t] + m_state - m_new)[..., None]
        inp = torch.exp(igate[..., t] - m_new)[..., None]
        k_t, v_t, q_t = k[:, :, t], v[:, :, t], q[:, :, t]
        c_state = decay[..., None] * c_state + inp[..., None] * (k_t[..., :, None] * v_t[..., None, :])
        n_state = decay * n_state + inp * k_t
        m_state = m_new
        numerator = (q_t[..., None, :] @ c_state).squeeze(-2)
        denominator = (q_t * n_state).sum(-1, keepdim=True)
        outputs.append(numerator / (torch.maximum(denominator.abs(), torch.exp(-m_new)[..., None]) + eps))
    return torch.stack(outputs, dim=2), MLSTMState(c_state, n_state, m_state)


class _DecayedScan(torch.autograd.Function):
    """An inclusive decayed scan, in place: ``x[:, :, c] += decay[:, :, c] * x[:, :, c - 1]`` for c >= 1.

    x (B, NH, N, X, Y) is overwritten by the scan (no buffer, no allocation per step); decay (B, NH, N), whose
    first entry is unused. The backward is the reverse scan, also in place.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
        decay_b = decay[..., None, None]
        for c in range(1, x.shape[2]):
            x[:, :, c].addcmul_(x[:, :, c - 1], decay_b[:, :, c])
        ctx.mark_dirty(x)
        ctx.save_for_backward(x, decay)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scanned, decay = ctx.saved_tensors
        # total[c] = dL/dx[c] through every later step: total[c] = grad[c] + decay[c + 1] * total[c + 1]
        total = grad.clone(memory_format=torch.contiguous_format)
        decay_b = decay[..., None, None]
        for c in range(total.shape[2] - 2, -1, -1):
            total[:, :, c].addcmul_(total[:, :, c + 1], decay_b[:, :, c + 1])
        grad_decay = torch.zeros_like(decay)
        grad_decay[:, :, 1:] = torch.linalg.vecdot(
            total[:, :, 1:].flatten(-2), scanned[:, :, :-1].flatten(-2)
        )
        return total, grad_decay


def _chunkwise(q, k, v, igate, fgate, key_scale, chunk_size, eps, state, return_state):
    batch, heads, seq_len, head_dim = q.shape
    value_dim = v.shape[-1]
    chunk = min(chunk_size, seq_len)
    num_chunks = -(-seq_len // chunk)
    pad = num_chunks * chunk - seq_len
    # A ones column appended to v makes every product with it also produce the normaliser's sum.
    v = torch.cat([v, v.new_ones(batch, heads, seq_len, 1)], dim=-1)
    if pad:
        # Tokens appended at the end cannot change the outputs before them (causality); with an input gate
        # of -inf and a forget gate of +inf they also leave the final state as it is.
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        igate, fgate = F.pad(igate, (0, pad), value=-math.inf), F.pad(fgate, (0, pad), value=math.inf)
    q = q.view(batch, heads, num_chunks, chunk, head_dim)
    k = k.view(batch, heads, num_chunks, chunk, head_dim)
    v = v.view(batch, heads, num_chunks, chunk, value_dim + 1)
    igate = igate.view(batch, heads, num_chunks, chunk)
    cum_log_f = F.logsigmoid(fgate).view(batch, heads, num_chunks, chunk).cumsum(-1)

    # Stabilisers of the states entering each chunk: m_0 = -inf (or the initial state's), m_{c+1} =
    # max(g_c + m_c, max_t log_w), with g_c the chunk's total log forget and log_w the log weight of each
    # token in the chunk-end state. With return_state, m_NC is the final state's.
    chunk_log_f = cum_log_f[..., -1]  # (B, NH, NC)
    log_w = chunk_log_f[..., None] - cum_log_f + igate  # (B, NH, NC, L)
    log_w_max = log_w.amax(-1)
    m_enter = [q.new_full((batch, heads), -math.inf) if state is None else state.m]
    for c in range(num_chunks if return_state else num_chunks - 1):
        m_enter.append(torch.maximum(chunk_log_f[..., c] + m_enter[-1], log_w_max[..., c]))
    m_enter = torch.stack(m_enter, dim=-1)  # (B, NH, NC + 1) with return_state, else (B, NH, NC)

    # The states entering chunks 1..NC-1 (scaled by exp(-m)): with E_c the state entering chunk c,
    # E_{c+1} = carry_c * E_c + (chunk c's k^T v), an in-place scan over the chunk contributions. E_0 is
    # the initial state (zero without one), added into the first contribution.
    log_scale = math.log(key_scale)
    known = m_enter.shape[-1] - 1  # chunks whose end stabiliser is known: NC, or NC - 1 without return_state
    carry = torch.exp(chunk_log_f[..., :known] + m_enter[..., :-1] - m_enter[..., 1:])  # (B, NH, known)

    def contributions(chunks: slice) -> torch.Tensor:  # (B, NH, n, DH, DHV+1) for the chunks of the slice
        m_next = m_enter[..., chunks.start + 1 : chunks.stop + 1, None]
        k_state = k[:, :, chunks] * torch.exp(log_w[:, :, chunks] - (m_next - log_scale))[..., None]
        return (k_state.transpose(-1, -2) @ v[:, :, chunks]).to(m_enter.dtype)

    states = contributions(slice(0, num_chunks - 1))  # E_1 .. E_{NC-1} once scanned
    initial = None
    if state is not None:
        initial = torch.cat([state.c, state.n[..., None]], dim=-1).to(states.dtype)  # E_0
        if num_chunks > 1:
            states[:, :, 0] += carry[:, :, 0, None, None] * initial
    states = _DecayedScan.apply(states, carry[..., : num_chunks - 1])

    # Outputs: the causal parallel form inside each chunk, plus the state entering it.
    log_d = _causal_log_decay(cum_log_f, igate)  # (B, NH, NC, L, L)
    log_state = cum_log_f + m_enter[..., :num_chunks, None]  # (B, NH, NC, L)
    m_out = torch.maximum(log_state, log_d.amax(-1))
    intra = (q @ k.transpose(-1, -2)) * torch.exp(log_d - (m_out[..., None] - log_scale))
    out = intra @ v
    state_weight = torch.exp(log_state - m_out)[..., None]  # (B, NH, NC, L, 1)
    if initial is not None:
        out[:, :, 0] += (q[:, :, 0] * state_weight[:, :, 0]) @ initial.to(q.dtype)
    if num_chunks > 1:
        out[:, :, 1:] += (q[:, :, 1:] * state_weight[:, :, 1:]) @ states.to(q.dtype)
    numerator, denominator = out[..., :value_dim], out[..., value_dim:]
    h = numerator / (torch.maximum(denominator.abs(), torch.exp(-m_out)[..., None]) + eps)
    h = h.reshape(batch, heads, num_chunks * chunk, value_dim)[:, :, :seq_len]
    if not return_state:
        return h, None
    # E_NC from the last chunk's contribution and the state entering it, computed apart so that the scanned
    # states above are used whole by the output products (a slice of them would be copied)
    final = contributions(slice(num_chunks - 1, num_chunks))[:, :, 0]
    entering_last = states[:, :, -1] if num_chunks > 1 else initial
    if entering_last is not None:
        final = final + carry[:, :, -1, None, None] * entering_last
    return h, MLSTMState(final[..., :value_dim], final[..., value_dim], m_enter[..., -1])
