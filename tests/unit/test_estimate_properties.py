"""Properties of the estimator over the whole catalog (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.controller.core.estimate import estimate, tp_problem, valid_tps
from fleet.controller.store.files import shipped_catalog

CATALOG = shipped_catalog()
E = CATALOG.engines
PAIRS = [(m, v) for m in CATALOG.models() for v in m.variants]

pairs = st.sampled_from(PAIRS)


@settings(max_examples=150, deadline=None)
@given(pairs, st.integers(1, 2**17), st.integers(1, 2**17), st.integers(0, 3))
def test_more_context_never_needs_less_memory(pair, a, b, tp_index):
    m, v = pair
    tps = valid_tps(m, v)
    tp = tps[tp_index % len(tps)]
    lo, hi = sorted((min(a, m.arch.max_context), min(b, m.arch.max_context)))
    small = estimate(m, v, engines=E, context=lo, tp=tp)
    big = estimate(m, v, engines=E, context=hi, tp=tp)
    assert big.total >= small.total
    assert big.kv_cache >= small.kv_cache


@settings(max_examples=150, deadline=None)
@given(pairs, st.integers(1, 8), st.integers(1, 8))
def test_higher_tp_never_needs_more_weights_per_gpu(pair, t1, t2):
    m, v = pair
    tps = valid_tps(m, v)
    lo, hi = sorted((tps[t1 % len(tps)], tps[t2 % len(tps)]))
    ctx = min(4096, m.arch.max_context)
    wide, narrow = estimate(m, v, engines=E, context=ctx, tp=hi), estimate(m, v, engines=E, context=ctx, tp=lo)
    assert wide.weights <= narrow.weights


@settings(max_examples=100, deadline=None)
@given(pairs)
def test_every_reported_tp_is_valid(pair):
    m, v = pair
    a = m.arch
    for tp in valid_tps(m, v):
        assert tp_problem(m, v, tp) is None
        if v.engine == "vllm":
            assert a.heads % tp == 0
            if a.attention != "mla":
                assert a.kv_heads % tp == 0 or tp % a.kv_heads == 0
            if v.group_size:
                inter = a.moe_intermediate_size if a.experts else (v.intermediate_size or a.intermediate_size)
                assert inter % (v.group_size * tp) == 0
        estimate(m, v, engines=E, context=min(1024, a.max_context), tp=tp)  # never raises for a reported TP
    assert 1 in valid_tps(m, v)


@settings(max_examples=100, deadline=None)
@given(pairs, st.integers(1, 2**16))
def test_breakdown_is_positive_and_sums(pair, ctx):
    m, v = pair
    e = estimate(m, v, engines=E, context=min(ctx, m.arch.max_context))
    assert min(e.weights, e.kv_cache, e.activations, e.runtime) > 0
    assert e.total == e.weights + e.kv_cache + e.activations + e.runtime
