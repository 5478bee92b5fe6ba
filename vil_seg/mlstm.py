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
  Work is batched over chunks; Python loops run over the (DH x DH) chunk states (the scan) and, for the
  products with them, over the (batch, head) sequences. Its backward is written out (``_ChunkwiseCell``).
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

__all__ = ["BACKENDS", "Backend", "MLSTMState", "chunk_size_for", "mlstm"]

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


def chunk_size_for(seq_len: int, head_dim: int, chunk_size: int = 64) -> int:
    """The chunk size at which ``backend="chunkwise"`` does the least work for a sequence of ``seq_len``.

    Per token, chunks of L cost about (DH + L) DH multiply-adds (the chunk states, then the parallel form
    inside a chunk), one chunk of S about S DH: up to S = DH + L a single chunk (the parallel form) is the
    cheaper way to compute the same function, beyond it ``chunk_size``.
    """
    return seq_len if seq_len <= head_dim + chunk_size else chunk_size


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


def _per_sequence_bmm(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool = False) -> None:
    """``out[i, j] (+)= a[i, j] @ b[i, j]``: one batched product over the chunks of each (batch, head).

    ``a``, ``b`` and ``out`` are (B, NH, N, ., .). Any of them may be a slice along N of a larger tensor: a
    slice of one sequence's chunks is a plain strided batch, where a flattened batch of such slices would
    be copied first.
    """
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            if accumulate:
                out[i, j].baddbmm_(a[i, j], b[i, j])
            else:
                torch.bmm(a[i, j], b[i, j], out=out[i, j])


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

    # The gate algebra, on (B, NH, NC, L) and (B, NH, NC, L, L) tensors (autograd differentiates it).
    # Stabilisers of the states entering each chunk, then of the final state: m_0 = -inf (or the initial
    # state's), m_{c+1} = max(g_c + m_c, max_t log_w), with g_c the chunk's total log forget and log_w the
    # log weight of each token in the chunk-end state.
    chunk_log_f = cum_log_f[..., -1]  # (B, NH, NC)
    log_w = chunk_log_f[..., None] - cum_log_f + igate  # (B, NH, NC, L)
    log_w_max = log_w.amax(-1)
    m_enter = [q.new_full((batch, heads), -math.inf) if state is None else state.m]
    for c in range(num_chunks):
        m_enter.append(torch.maximum(chunk_log_f[..., c] + m_enter[-1], log_w_max[..., c]))
    m_enter = torch.stack(m_enter, dim=-1)  # (B, NH, NC + 1)
    m_next = m_enter[..., 1:]
    log_scale = math.log(key_scale)  # the key scale rides on the decay factors: no pass over k
    log_carry = chunk_log_f + m_enter[..., :-1] - m_next  # state c -> state c + 1, (B, NH, NC)
    key_weight = torch.exp(log_w - (m_next[..., None] - log_scale))  # token -> chunk-end state
    log_d = _causal_log_decay(cum_log_f, igate)  # (B, NH, NC, L, L)
    log_state = cum_log_f + m_enter[..., :-1, None]  # (B, NH, NC, L)
    m_out = torch.maximum(log_state, log_d.amax(-1))
    decay = torch.exp(log_d - (m_out[..., None] - log_scale))  # token j -> output t inside a chunk
    state_weight = torch.exp(log_state - m_out)  # entering state -> output t

    initial = None if state is None else torch.cat([state.c, state.n[..., None]], dim=-1)
    h, final = _ChunkwiseCell.apply(
        q, k, v, decay, key_weight, state_weight, log_carry, m_out, initial, eps, return_state
    )
    h = h.view(batch, heads, num_chunks * chunk, value_dim)[:, :, :seq_len]
    if not return_state:
        return h, None
    return h, MLSTMState(final[..., :value_dim], final[..., value_dim], m_enter[..., -1])


class _ChunkwiseCell(torch.autograd.Function):
    """The matrix work of the chunkwise form, given the gate algebra's factors, with its own backward.

    Inputs, per batch element and head, over NC chunks of L tokens: ``q``, ``k`` (NC, L, DH), ``v`` with its
    ones column (NC, L, DHV + 1), ``decay`` (NC, L, L), ``key_weight``, ``state_weight``, ``m_out``
    (NC, L), ``log_carry`` (NC), ``initial`` (DH, DHV + 1) or None. With E_0 the initial state (zero if
    None) and ``carry = exp(log_carry)``:

        E_{c+1} = carry_c E_c + (k_c * key_weight_c)^T v_c                 (states, an in-place scan)
        out_c   = ((q_c k_c^T) * decay_c) v_c + (q_c * state_weight_c) E_c
        h_c     = out_c[:, :DHV] / (max(|out_c[:, DHV]|, exp(-m_out_c)) + eps)

    Returns h (B, NH, NC, L, DHV) and E_NC (B, NH, DH, DHV + 1) if ``return_final`` (else an empty tensor).

    Everything here runs in the inputs' (compute) dtype, also under autocast: the chunk states accumulate
    over the whole sequence. The backward is written out: it works in place on buffers it owns (the reverse
    scan runs on the state gradients it computes, where autograd would copy them first), and it keeps only
    the chunk states, the intra-chunk scores and the (NC, L) factors from the forward.
    """

    @staticmethod
    def forward(ctx, q, k, v, decay, key_weight, state_weight, log_carry, m_out, initial, eps, return_final):
        with torch.autocast(q.device.type, enabled=False):
            return _ChunkwiseCell._forward(
                ctx, q, k, v, decay, key_weight, state_weight, log_carry, m_out, initial, eps, return_final
            )

    @staticmethod
    def _forward(ctx, q, k, v, decay, key_weight, state_weight, log_carry, m_out, initial, eps, return_final):
        batch, heads, num_chunks, _, head_dim = q.shape
        carry = log_carry.exp()
        value_dim = v.shape[-1] - 1
        num_states = num_chunks if return_final else num_chunks - 1  # E_1 .. E_NC, or without the final
        scores = q @ k.transpose(-1, -2)  # (B, NH, NC, L, L)
        out = (scores * decay) @ v
        states = q.new_empty(batch, heads, num_states, head_dim, value_dim + 1)  # states[c] = E_{c+1}
        if num_states:
            keys = k[:, :, :num_states] * key_weight[:, :, :num_states, :, None]
            _per_sequence_bmm(states, keys.transpose(-1, -2), v[:, :, :num_states])
            if initial is not None:
                states[:, :, 0].addcmul_(initial, carry[:, :, 0, None, None])
            for c in range(1, num_states):
                states[:, :, c].addcmul_(states[:, :, c - 1], carry[:, :, c, None, None])
        if initial is not None or num_chunks > 1:  # outputs read an entering state
            queries = q * state_weight[..., None]
            if initial is not None:
                out[:, :, 0] += queries[:, :, 0] @ initial
            if num_chunks > 1:
                _per_sequence_bmm(
                    out[:, :, 1:], queries[:, :, 1:], states[:, :, : num_chunks - 1], accumulate=True
                )
        numerator, denominator = out[..., :value_dim], out[..., value_dim].clone()
        normaliser = torch.maximum(denominator.abs(), torch.exp(-m_out)) + eps
        h = numerator / normaliser[..., None]
        ctx.save_for_backward(
            q, k, v, decay, key_weight, state_weight, carry, m_out, initial, scores, states, h, denominator,
            normaliser,
        )  # fmt: skip
        final = states[:, :, -1].clone() if return_final else q.new_empty(0)
        if not return_final:
            ctx.mark_non_differentiable(final)
        return h, final

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h, grad_final):
        with torch.autocast(grad_h.device.type, enabled=False):
            return _ChunkwiseCell._backward(ctx, grad_h, grad_final)

    @staticmethod
    def _backward(ctx, grad_h, grad_final):
        (q, k, v, decay, key_weight, state_weight, carry, m_out, initial, scores, states, h, denominator,
         normaliser) = ctx.saved_tensors  # fmt: skip
        num_chunks = q.shape[2]
        num_states = states.shape[2]
        return_final = num_states == num_chunks  # else E_1 .. E_{NC-1}
        value_dim = h.shape[-1]

        # the normaliser; torch.maximum's gradient goes to the larger argument, half to each on a tie
        grad_normaliser = -torch.linalg.vecdot(grad_h, h) / normaliser
        floor = torch.exp(-m_out)
        magnitude = denominator.abs()
        to_denominator = (magnitude > floor).to(q.dtype) + 0.5 * (magnitude == floor).to(q.dtype)
        grad_out = torch.empty_like(v)
        torch.div(grad_h, normaliser[..., None], out=grad_out[..., :value_dim])
        grad_out[..., value_dim] = grad_normaliser * to_denominator * denominator.sign()
        grad_m_out = grad_normaliser * (to_denominator - 1) * floor

        # inside the chunks
        grad_scores = grad_out @ v.transpose(-1, -2)
        grad_v = (scores * decay).transpose(-1, -2) @ grad_out
        grad_decay = grad_scores * scores
        grad_scores.mul_(decay)
        grad_q = grad_scores @ k
        grad_k = grad_scores.transpose(-1, -2) @ q

        # the states read by the outputs: chunk c >= 1 reads E_c = states[c - 1], chunk 0 the initial state
        grad_queries = torch.empty_like(q)
        if initial is not None:
            grad_queries[:, :, 0] = grad_out[:, :, 0] @ initial.transpose(-1, -2)
        else:
            grad_queries[:, :, 0] = 0
        if num_chunks > 1:
            _per_sequence_bmm(
                grad_queries[:, :, 1:], grad_out[:, :, 1:], states[:, :, : num_chunks - 1].transpose(-1, -2)
            )
        grad_q.addcmul_(grad_queries, state_weight[..., None])
        grad_state_weight = torch.linalg.vecdot(grad_queries, q)
        queries = torch.mul(q, state_weight[..., None], out=grad_queries)  # the buffer is free again

        grad_key_weight = torch.zeros_like(key_weight)
        grad_states = None
        if num_states:
            grad_states = torch.empty_like(states)
            if num_chunks > 1:
                _per_sequence_bmm(
                    grad_states[:, :, : num_chunks - 1],
                    queries[:, :, 1:].transpose(-1, -2),
                    grad_out[:, :, 1:],
                )
            if return_final:
                grad_states[:, :, -1] = grad_final
            # the scan's reverse, in place: the total gradient of E_{c+1} also flows on through E_{c+2}
            for c in range(num_states - 2, -1, -1):
                grad_states[:, :, c].addcmul_(grad_states[:, :, c + 1], carry[:, :, c + 1, None, None])
            # the chunk contributions (k * key_weight)^T v
            grad_keys = torch.empty_like(k[:, :, :num_states])
            _per_sequence_bmm(grad_keys, v[:, :, :num_states], grad_states.transpose(-1, -2))
            grad_k[:, :, :num_states].addcmul_(grad_keys, key_weight[:, :, :num_states, :, None])
            grad_key_weight[:, :, :num_states] = torch.linalg.vecdot(grad_keys, k[:, :, :num_states])
            keys = k[:, :, :num_states] * key_weight[:, :, :num_states, :, None]
            _per_sequence_bmm(grad_v[:, :, :num_states], keys, grad_states, accumulate=True)

        # carry's gradient, without a pass over the states. Rescaling E_{c+1} by exp(-d) (carry_c and
        # key_weight_c by exp(-d), carry_{c+1} and state_weight_{c+1} by exp(d)) changes nothing else, so the
        # gradients with respect to the logs of these factors cancel: with G_c that of log carry_c,
        #   G_c = G_{c+1} + sum_t G(state_weight_{c+1, t}) - sum_t G(key_weight_{c, t}),
        # and the final state E_NC gives G_{NC-1} = <dE_NC, E_NC> - sum_t G(key_weight_{NC-1, t}).
        log_grad_key_weight = torch.linalg.vecdot(grad_key_weight, key_weight)  # (B, NH, NC)
        log_grad_state_weight = torch.linalg.vecdot(grad_state_weight, state_weight)
        steps = torch.zeros_like(carry)
        steps[..., : num_chunks - 1] = log_grad_state_weight[..., 1:] - log_grad_key_weight[..., :-1]
        if return_final:  # else log carry_{NC-1} scales no state: its step stays zero
            final_term = torch.linalg.vecdot(grad_final.flatten(-2), states[:, :, -1].flatten(-2))
            steps[..., -1] = final_term - log_grad_key_weight[..., -1]
        grad_log_carry = steps.flip(-1).cumsum(-1).flip(-1)
        if initial is None:
            grad_log_carry[..., 0] = 0  # it scales a zero state (the sum above is zero up to rounding)

        grad_initial = None
        if initial is not None:
            grad_initial = queries[:, :, 0].transpose(-1, -2) @ grad_out[:, :, 0]
            if grad_states is not None:
                grad_initial.addcmul_(grad_states[:, :, 0], carry[:, :, 0, None, None])
        return (
            grad_q, grad_k, grad_v, grad_decay, grad_key_weight, grad_state_weight, grad_log_carry,
            grad_m_out, grad_initial, None, None,
        )  # fmt: skip
