"""The mLSTM backends: the original's reference case, agreement in values and gradients, robustness."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from vil_seg.mlstm import BACKENDS, MLSTMState, chunk_size_for, mlstm

from .conftest import rel_err

GATE_NAMES = ("q", "k", "v", "igate_preact", "fgate_preact")


@pytest.fixture(scope="module")
def reference_case(fixtures_dir):
    return load_file(fixtures_dir / "tiny_mlstm_parallel.safetensors")


@pytest.mark.parametrize("backend", BACKENDS)
def test_reference_case_float64(reference_case, backend):
    inputs = [reference_case[name] for name in GATE_NAMES]
    assert inputs[0].dtype == torch.float64
    h = mlstm(*inputs, backend=backend)
    assert h.dtype == torch.float64
    assert rel_err(h, reference_case["h"]) <= 1e-10


@pytest.mark.parametrize("chunk_size", [16, 64, 200, 256])
def test_reference_case_chunkwise_float32(reference_case, chunk_size):
    inputs = [reference_case[name].float() for name in GATE_NAMES]
    h = mlstm(*inputs, backend="chunkwise", chunk_size=chunk_size)
    assert h.dtype == torch.float32
    assert rel_err(h, reference_case["h"]) <= 1e-4


def _random_inputs(seed, batch, heads, seq_len, head_dim, value_dim, gate_scale, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    q, k = randn(batch, heads, seq_len, head_dim), randn(batch, heads, seq_len, head_dim)
    v = randn(batch, heads, seq_len, value_dim)
    igate = randn(batch, heads, seq_len) * gate_scale
    fgate = randn(batch, heads, seq_len) * gate_scale + 2.0
    return [t.requires_grad_() for t in (q, k, v, igate, fgate)]


def _value_and_grads(inputs, **kwargs):
    h = mlstm(*inputs, **kwargs)
    weights = torch.linspace(-1.0, 1.0, h.numel(), dtype=h.dtype).view_as(h)
    grads = torch.autograd.grad((h * weights).sum(), inputs)
    return h.detach(), grads


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    seq_len=st.integers(1, 70),
    head_dim=st.sampled_from([1, 4, 8]),
    value_dim=st.sampled_from([2, 8]),
    chunk_size=st.integers(1, 32),
    gate_scale=st.sampled_from([0.1, 1.0, 5.0]),
)
def test_backends_agree_float64(seed, batch, heads, seq_len, head_dim, value_dim, chunk_size, gate_scale):
    inputs = _random_inputs(seed, batch, heads, seq_len, head_dim, value_dim, gate_scale)
    ref_h, ref_grads = _value_and_grads(inputs, backend="parallel")
    for backend in ("chunkwise", "recurrent"):
        h, grads = _value_and_grads(inputs, backend=backend, chunk_size=chunk_size)
        assert rel_err(h, ref_h) <= 1e-10, backend
        for name, grad, ref_grad in zip(GATE_NAMES, grads, ref_grads, strict=True):
            assert rel_err(grad, ref_grad) <= 1e-8, (backend, name)


def _segmented(inputs, cuts, **kwargs):
    """mlstm over consecutive segments ending at ``cuts``, each starting from the state before it."""
    outputs, state, start = [], None, 0
    for end in cuts:
        part = [t[:, :, start:end] for t in inputs]
        h, state = mlstm(*part, initial_state=state, return_state=True, **kwargs)
        outputs.append(h)
        start = end
    return torch.cat(outputs, dim=2), state


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    seq_len=st.integers(2, 60),
    cut_fractions=st.lists(st.floats(0.05, 0.95), min_size=1, max_size=3),
    chunk_size=st.integers(1, 16),
    gate_scale=st.sampled_from([0.1, 1.0, 5.0]),
)
def test_segments_with_state_equal_whole_sequence(seed, seq_len, cut_fractions, chunk_size, gate_scale):
    """Values and gradients of segment-by-segment processing equal the whole sequence's (float64)."""
    inputs = _random_inputs(seed, 2, 2, seq_len, 4, 3, gate_scale)
    cuts = [*sorted({max(1, min(seq_len - 1, round(f * seq_len))) for f in cut_fractions}), seq_len]
    ref_h, ref_grads = _value_and_grads(inputs, backend="parallel")
    _, ref_state = mlstm(*inputs, backend="recurrent", return_state=True)
    for backend in ("chunkwise", "recurrent"):
        h, state = _segmented(inputs, cuts, backend=backend, chunk_size=chunk_size)
        assert rel_err(h, ref_h) <= 1e-10, backend
        weights = torch.linspace(-1.0, 1.0, h.numel(), dtype=h.dtype).view_as(h)
        grads = torch.autograd.grad((h * weights).sum(), inputs)
        for name, grad, ref_grad in zip(GATE_NAMES, grads, ref_grads, strict=True):
            assert rel_err(grad, ref_grad) <= 1e-8, (backend, name)
        # the same stabiliser, hence the same stabilised state, as the token-by-token recursion
        torch.testing.assert_close(state.m, ref_state.m, rtol=0, atol=1e-12)
        for name in ("c", "n"):
            assert rel_err(getattr(state, name), getattr(ref_state, name)) <= 1e-10, (backend, name)


def test_state_is_the_recurrence_state_on_a_hand_case():
    """One head, DH = 1, two tokens: the state is the recurrence worked out by hand."""
    q = torch.ones(1, 1, 2, 1, dtype=torch.float64)
    k = torch.tensor([2.0, 3.0], dtype=torch.float64).view(1, 1, 2, 1)
    v = torch.tensor([5.0, 7.0], dtype=torch.float64).view(1, 1, 2, 1)
    igate = torch.tensor([0.5, -1.0], dtype=torch.float64).view(1, 1, 2)
    fgate = torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 1, 2)
    log_f2 = torch.nn.functional.logsigmoid(fgate[0, 0, 1])
    m = torch.maximum(log_f2 + 0.5, torch.tensor(-1.0, dtype=torch.float64))  # m_1 = i_1 = 0.5
    c_true = torch.exp(log_f2) * math.exp(0.5) * 2 * 5 + math.exp(-1.0) * 3 * 7
    n_true = torch.exp(log_f2) * math.exp(0.5) * 2 + math.exp(-1.0) * 3
    for backend in ("chunkwise", "recurrent"):
        _, state = mlstm(q, k, v, igate, fgate, backend=backend, chunk_size=1, return_state=True)
        scale = torch.exp(-m)
        torch.testing.assert_close(state.m[0, 0], m, rtol=0, atol=1e-15)
        # keys enter the state scaled by DH ** -0.5 = 1
        torch.testing.assert_close(state.c[0, 0, 0, 0], c_true * scale, rtol=1e-14, atol=0)
        torch.testing.assert_close(state.n[0, 0, 0], n_true * scale, rtol=1e-14, atol=0)


def test_state_errors():
    q, k, v, igate, fgate = (t.detach() for t in _random_inputs(0, 1, 2, 9, 4, 3, 1.0))
    _, state = mlstm(q, k, v, igate, fgate, return_state=True)
    assert isinstance(state, MLSTMState) and state.c.shape == (1, 2, 4, 3)
    with pytest.raises(ValueError, match="parallel backend keeps no state"):
        mlstm(q, k, v, igate, fgate, backend="parallel", return_state=True)
    with pytest.raises(ValueError, match=r"initial_state.c must have shape \(1, 2, 4, 3\)"):
        mlstm(q, k, v, igate, fgate, initial_state=MLSTMState(state.c[..., :2], state.n, state.m))
    with pytest.raises(TypeError, match="must be an MLSTMState"):
        mlstm(q, k, v, igate, fgate, initial_state=state.c)


def test_chunk_size_for_takes_one_chunk_up_to_head_dim_plus_chunk():
    assert chunk_size_for(196, 192, 64) == 196  # 224x224 ViL-S: one chunk
    assert chunk_size_for(256, 192, 64) == 256
    assert chunk_size_for(257, 192, 64) == 64
    assert chunk_size_for(1024, 32, 8) == 8


def test_chunk_padding_matches_unpadded_prefix():
    """A sequence whose length is not a multiple of the chunk gives the outputs of its own prefix."""
    inputs = _random_inputs(3, 1, 2, 50, 8, 8, 1.0)
    full = mlstm(*inputs, backend="chunkwise", chunk_size=16)
    prefix = mlstm(*(t[:, :, :37] for t in inputs), backend="chunkwise", chunk_size=16)
    torch.testing.assert_close(prefix, full[:, :, :37], rtol=0, atol=1e-12)


def test_gate_shapes_with_trailing_one_accepted():
    q, k, v, igate, fgate = _random_inputs(0, 1, 2, 9, 4, 4, 1.0)
    h = mlstm(q, k, v, igate, fgate)
    h4 = mlstm(q, k, v, igate[..., None], fgate[..., None])
    torch.testing.assert_close(h, h4, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_gates_stay_finite(dtype, backend):
    q, k, v, igate, fgate = _random_inputs(7, 2, 2, 40, 8, 8, 1.0, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    signs = torch.randint(0, 2, igate.shape, generator=gen) * 2 - 1
    igate = (40.0 * signs).to(dtype).requires_grad_()
    fgate = (-40.0 * signs.roll(1, -1)).to(dtype).requires_grad_()
    inputs = [q, k, v, igate, fgate]
    h = mlstm(*inputs, backend=backend, chunk_size=16)
    assert h.dtype == dtype
    assert torch.isfinite(h).all()
    grads = torch.autograd.grad(h.float().sum(), inputs)
    assert all(torch.isfinite(g).all() for g in grads)


def test_low_precision_matches_float64_reference():
    """bf16 inputs are computed in float32 inside; the result is the float64 answer to bf16 precision."""
    inputs64 = [t.detach() for t in _random_inputs(11, 1, 2, 130, 16, 16, 1.0)]
    ref = mlstm(*inputs64, backend="parallel")
    h = mlstm(*(t.bfloat16() for t in inputs64), backend="chunkwise", chunk_size=32)
    assert h.dtype == torch.bfloat16
    assert rel_err(h, ref) <= 2e-2


def test_autocast_keeps_gate_math_in_float32():
    inputs = [t.detach().float() for t in _random_inputs(5, 1, 2, 70, 8, 8, 3.0)]
    ref = mlstm(*(t.double() for t in inputs), backend="parallel")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = mlstm(*inputs, backend="chunkwise", chunk_size=16)
    assert h.dtype == torch.float32
    assert torch.isfinite(h).all()
    assert rel_err(h, ref) <= 5e-2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(backend="quadratic"), "unknown mLSTM backend"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_bad_options(kwargs, message):
    q, k, v, igate, fgate = _random_inputs(0, 1, 1, 4, 4, 4, 1.0)
    with pytest.raises(ValueError, match=message):
        mlstm(q, k, v, igate, fgate, **kwargs)


def test_bad_shapes():
    q, k, v, igate, fgate = _random_inputs(0, 1, 2, 6, 4, 4, 1.0)
    with pytest.raises(ValueError, match="k must have the shape of q"):
        mlstm(q, k[..., :3], v, igate, fgate)
    with pytest.raises(ValueError, match="v must be"):
        mlstm(q, k, v[:, :1], igate, fgate)
    with pytest.raises(ValueError, match="fgate_preact must be"):
        mlstm(q, k, v, igate, fgate[..., :5])
    with pytest.raises(ValueError, match="q must be"):
        mlstm(q[0], k[0], v[0], igate[0], fgate[0])


@pytest.mark.parametrize("with_initial", [False, True])
@pytest.mark.parametrize("return_final", [False, True])
@pytest.mark.parametrize("num_chunks", [1, 3])
def test_chunkwise_cell_gradcheck(with_initial, return_final, num_chunks):
    """The hand-written backward of the chunkwise cell against finite differences (float64), including the
    normaliser's floor branch, the initial state's gradient and gradients arriving through the final state."""
    from vil_seg.mlstm import _ChunkwiseCell

    gen = torch.Generator().manual_seed(num_chunks + 2 * with_initial + 4 * return_final)
    batch, heads, chunk, head_dim, value_dim = 2, 2, 4, 3, 2

    def rand(*shape, positive=False):
        t = torch.rand(*shape, generator=gen, dtype=torch.float64)
        return (t + 0.1 if positive else 2 * t - 1).requires_grad_()

    q, k = rand(batch, heads, num_chunks, chunk, head_dim), rand(batch, heads, num_chunks, chunk, head_dim)
    v = rand(batch, heads, num_chunks, chunk, value_dim + 1)
    decay = torch.rand(batch, heads, num_chunks, chunk, chunk, generator=gen, dtype=torch.float64) + 0.1
    decay = decay.tril().requires_grad_()
    key_weight, state_weight = (rand(batch, heads, num_chunks, chunk, positive=True) for _ in range(2))
    log_carry = rand(batch, heads, num_chunks)
    # exp(-m_out) from about 0.05 to 20: some normalisers take the floor, most the |denominator|
    m_out = (
        torch.randn(batch, heads, num_chunks, chunk, generator=gen, dtype=torch.float64) * 1.5
    ).requires_grad_()
    initial = rand(batch, heads, head_dim, value_dim + 1) if with_initial else None
    inputs = (q, k, v, decay, key_weight, state_weight, log_carry, m_out) + (
        (initial,) if with_initial else ()
    )

    def cell(*args):
        h, final = _ChunkwiseCell.apply(*args[:8], args[8] if with_initial else None, 1e-6, return_final)
        return (h, final) if return_final else h

    h = cell(*inputs)
    h = h[0] if return_final else h
    # both branches of max(|denominator|, exp(-m_out)) occur: m_out gets a gradient only where the floor won
    grad_m_out = torch.autograd.grad(h.sum(), m_out)[0]
    assert (grad_m_out != 0).any() and (grad_m_out == 0).any()
    assert torch.autograd.gradcheck(cell, inputs)
