"""The graph walks behind flow_start's save-time checks (hub.flows): cycles and chain depth."""

from hub.flows import _longest, _path_to


def test_a_cycle_is_found_with_its_chain():
    calls = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    assert _path_to(calls, "b", "a", ["a", "b"]) == ["a", "b", "c", "a"]
    assert _path_to(calls, "d", "a", ["a", "d"]) is None


def test_the_longest_chain_is_found_and_wide_graphs_stay_cheap():
    calls = {"a": ["b", "c"], "b": ["d"], "c": [], "d": []}
    assert _longest(calls, "a", set()) == ["a", "b", "d"]
    assert _longest(calls, "a", {"b"}) == ["a", "c"]
    # 30 layers of 2 flows, each calling both of the next layer: 2**30 paths, one walk per node.
    wide = {f"{i}{side}": [f"{i + 1}l", f"{i + 1}r"] for i in range(30) for side in "lr"}
    assert len(_longest(wide, "0l", set())) == 31


def test_a_cycle_written_around_the_checks_does_not_loop():
    calls = {"a": ["b"], "b": ["a"]}
    assert _longest(calls, "a", set()) == ["a", "b"]
