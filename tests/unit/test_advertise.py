"""--advertise-address's default: the local address of the agent's route to the controller (the first of several)."""

from __future__ import annotations

from fleet.agent.main import local_address_towards


def test_the_default_is_the_local_address_towards_the_controller() -> None:
    assert local_address_towards("127.0.0.1:50051") == "127.0.0.1"


def test_several_controllers_use_the_first() -> None:
    # HA: agents take a comma-separated list; the route to the first decides (all share one network in practice)
    assert local_address_towards("127.0.0.1:50051,[::1]:50052") == "127.0.0.1"
    assert local_address_towards("[::1]:50051,127.0.0.1:50052") == "::1"
