"""The gang protocol's order (core/parts.py) with parts on declared nodes: a `declared` part has started as far
as the gang is concerned, so the main is released instead of holding forever."""

from __future__ import annotations

from fleet.controller.core.parts import LLAMA_CPP, VLLM, PartLaunch, PartState, launches


def test_llama_cpp_main_is_told_its_declared_rpc_servers() -> None:
    parts = [PartState(0, "a", "pending", epoch=1), PartState(1, "b", "declared", "10.0.0.2:50100", epoch=1)]
    assert launches(LLAMA_CPP, 1, parts) == [PartLaunch(0, False, ("10.0.0.2:50100",)), PartLaunch(1, False)]
    # still waiting while the rpc-server has not reported its address, or in an older epoch
    assert launches(LLAMA_CPP, 1, [parts[0], PartState(1, "b", "declared", "", epoch=1)])[0].hold
    assert launches(LLAMA_CPP, 2, parts)[0].hold


def test_vllm_main_starts_once_its_declared_followers_have() -> None:
    main = PartState(0, "a", "pending", "10.0.0.1:50200", epoch=1)
    held = launches(VLLM, 1, [main, PartState(1, "b", "pending", epoch=1)])
    assert held[0].hold and not held[1].hold and held[1].master_address == "10.0.0.1:50200"
    go = launches(VLLM, 1, [main, PartState(1, "b", "declared", epoch=1)])
    assert not go[0].hold
    # a declared main still tells its followers where it is
    done = launches(VLLM, 1, [PartState(0, "a", "declared", "10.0.0.1:50200", epoch=1),
                              PartState(1, "b", "declared", epoch=1)])
    assert [p.hold for p in done] == [False, False] and done[1].master_address == "10.0.0.1:50200"
