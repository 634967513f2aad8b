"""ALFWorld game generation without the engine: task mixes, rooms, ids, PDDL problems (fast)."""

import collections
import random

import pytest

pytest.importorskip("alfworld")

from madopd_envs.alfworld import scenes  # noqa: E402


@pytest.mark.parametrize("split,n", [("valid_seen", 140), ("valid_unseen", 134)])
def test_eval_splits_reproduce_upstreams_task_mix(split, n):
    counts = collections.Counter(scenes.task_type_at(split, i) for i in range(n))
    assert counts == scenes.UPSTREAM_MIX[split]


def test_train_prefixes_follow_the_train_mix():
    counts = collections.Counter(scenes.task_type_at("train", i) for i in range(1000))
    mix = scenes.UPSTREAM_MIX["train"]
    total = sum(mix.values())
    for t, c in counts.items():
        assert abs(c - 1000 * mix[t] / total) <= 1


def test_unseen_rooms_are_never_used_by_train_or_seen():
    assert set(scenes.rooms_for("valid_unseen")) == set(scenes.UNSEEN_ROOMS)
    assert not set(scenes.UNSEEN_ROOMS) & set(scenes.rooms_for("train"))
    used = {scenes.task_spec("train", i, 0).scene for i in range(300)}
    assert not used & set(scenes.UNSEEN_ROOMS)
    assert {scenes.task_spec("valid_unseen", i, 0).scene for i in range(134)} <= set(scenes.UNSEEN_ROOMS)


def test_task_specs_respect_alfreds_room_rules_and_affordances():
    tables = scenes._tables()
    for i in range(200):
        spec = scenes.task_spec("train", i, 7)
        room = scenes.load_room(spec.scene)
        assert room.kind in scenes.TASK_ROOM_TYPES[spec.task_type]
        assert spec.object_target in room.pickupable
        if spec.task_type == "look_at_obj_in_light":
            assert spec.toggle_target in scenes.LAMPS and not spec.parent_target
        else:
            assert spec.object_target in tables["holds"][spec.parent_target]
            assert spec.parent_target in room.receptacle_types
        if spec.task_type in scenes.TASK_APPLIANCE:
            assert scenes.TASK_APPLIANCE[spec.task_type] in room.receptacle_types
            assert spec.parent_target != scenes.TASK_APPLIANCE[spec.task_type]


def test_ids_and_problems_are_deterministic_and_seed_dependent():
    a = [scenes.game_id("valid_seen", i, 0) for i in range(20)]
    assert a == [scenes.game_id("valid_seen", i, 0) for i in range(20)]
    assert a != [scenes.game_id("valid_seen", i, 1) for i in range(20)]
    assert a[3].startswith("valid_seen/") and a[3].endswith("/trial_G0_00003")

    def problem(seed_text):
        spec = scenes.task_spec("valid_unseen", 5, 0)
        rng = random.Random(seed_text)
        return scenes.pddl_problem(spec, scenes.populate(spec, rng), rng, name="p")

    assert problem("s") == problem("s") and problem("s") != problem("t")


def test_target_never_starts_in_the_goal_receptacle_type():
    for i in range(60):
        spec = scenes.task_spec("train", i, 3)
        placement = scenes.populate(spec, random.Random(i))
        types = {r: cls for r, cls, _ in scenes.load_room(spec.scene).receptacles}
        targets = [o for o in placement if o.split("|")[0] == spec.object_target]
        assert targets and all(types[placement[o]] != spec.parent_target for o in targets)
        if spec.task_type == "pick_two_obj_and_place":
            assert len(targets) >= 2
        if spec.toggle_target:
            assert sum(o.split("|")[0] == spec.toggle_target for o in placement) == 1


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown ALFWorld split"):
        scenes.task_spec("test", 0, 0)


def test_open_view_keeps_targets_out_of_closed_receptacles():
    tables = scenes._tables()
    spec = next(s for s in (scenes.task_spec("valid_unseen", i, 0) for i in range(134))
                if s.task_type == "pick_two_obj_and_place" and s.scene == 10)
    types = {r: cls for r, cls, _ in scenes.load_room(spec.scene).receptacles}
    placement = scenes.populate(spec, random.Random(0), open_view=True)
    hosts = {types[r] for o, r in placement.items() if o.split("|")[0] == spec.object_target}
    assert hosts and not hosts & tables["openable"]
