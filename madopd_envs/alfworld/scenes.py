"""ALFWorld scenes and tasks built only from what the ``alfworld`` wheel ships.

No ALFWorld game data ships and the upstream download is unreachable offline, but the wheel carries
the ingredients upstream's games were made from: the AI2-THOR floor plans (``gen/layouts``: the
receptacles of 120 rooms with their navigation poses, the object classes of each room), the
affordance tables (``gen/constants``: which receptacle holds which object, what can be heated,
cooled, cleaned, toggled) and the goal library (``gen/goal_library``: the PDDL goal and the task
sentences of each task type). This module turns them into one PDDL problem per task, in the format
of upstream's ``initial_state.pddl`` (ALFRED object ids such as ``Apple_bar__plus_01_dot_20...``,
``loc_bar_...`` locations), so the games play on the unchanged TextWorld PDDL engine.

Determinism: everything is drawn from ``random.Random`` seeded with strings, which Python hashes
with SHA-512, so the same (seed, split, index) gives the same game on any machine.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

# Upstream's task-type counts (alfworld data README; ReAct's per-type table on the 134 unseen games
# matches these denominators). Default eval sets reproduce the two eval mixes exactly; train games
# follow the train proportions.
UPSTREAM_MIX: dict[str, dict[str, int]] = {
    "train": dict(zip(TASK_TYPES, (790, 308, 650, 459, 533, 813))),
    "valid_seen": dict(zip(TASK_TYPES, (35, 13, 27, 16, 25, 24))),
    "valid_unseen": dict(zip(TASK_TYPES, (24, 18, 31, 23, 21, 17))),
}
SPLITS = ("train", "valid_seen", "valid_unseen")

# Upstream's valid_unseen games come from these four rooms (one per room type), which ALFRED never
# used for training. Train and valid_seen draw from ALFRED's other training rooms; ALFRED's test rooms
# (1-6, 201-206, 301-306, 401-406) are left out, as upstream's three splits leave them out.
UNSEEN_ROOMS = (10, 219, 308, 424)
ROOM_TYPES = {"Kitchen": range(1, 31), "LivingRoom": range(201, 231), "Bedroom": range(301, 331),
              "Bathroom": range(401, 431)}
# ALFRED's rule of which room types each task is generated in (gen/constants.GOALS_VALID).
TASK_ROOM_TYPES = {
    "pick_and_place_simple": {"Kitchen", "LivingRoom", "Bathroom", "Bedroom"},
    "pick_two_obj_and_place": {"Kitchen", "LivingRoom", "Bathroom", "Bedroom"},
    "look_at_obj_in_light": {"LivingRoom", "Bedroom"},
    "pick_clean_then_place_in_recep": {"Kitchen", "Bathroom"},
    "pick_heat_then_place_in_recep": {"Kitchen"},
    "pick_cool_then_place_in_recep": {"Kitchen"},
}
# The appliance a task needs; the goal receptacle is never that appliance.
TASK_APPLIANCE = {"pick_clean_then_place_in_recep": "SinkBasin", "pick_heat_then_place_in_recep": "Microwave",
                  "pick_cool_then_place_in_recep": "Fridge"}
TASK_PROPERTY = {"pick_clean_then_place_in_recep": "Cleanable", "pick_heat_then_place_in_recep": "Heatable",
                 "pick_cool_then_place_in_recep": "Coolable"}
LAMPS = ("DeskLamp", "FloorLamp")
# Lamps stand on these surfaces (the affordance table lists no receptacle for lamps; the toggle
# action needs the lamp to be in a receptacle where the agent stands).
LAMP_SURFACES = ("Desk", "SideTable", "Dresser", "DiningTable", "CoffeeTable", "TVStand", "Shelf", "CounterTop",
                 "Ottoman", "Cart")
# Receptacles that the layouts' navigation file omits in some rooms; how many to add.
EXTRA_RECEPTACLE_COUNT = {"StoveBurner": 4}


@functools.lru_cache(maxsize=1)
def _tables() -> dict[str, Any]:
    """The wheel's affordance tables (imported lazily: alfworld is an optional engine)."""
    import alfworld.gen.constants as c
    import alfworld.gen.goal_library as glib

    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    holds = {r: set(objs) for r, objs in c.VAL_RECEPTACLE_OBJECTS.items() if r in static}
    pickupable = set().union(*c.VAL_RECEPTACLE_OBJECTS.values()) - {o for o in c.OBJECTS if o.endswith("Sliced")}
    return {
        "objects": list(c.OBJECTS),
        "static": static,
        "movable": set(c.MOVABLE_RECEPTACLES),
        "openable": set(c.OPENABLE_CLASS_LIST),
        "holds": holds,
        "pickupable": pickupable,
        "actions": {k: set(v) for k, v in c.VAL_ACTION_OBJECTS.items()},
        "goals": {t: glib.gdict[t] for t in TASK_TYPES},
        "layouts": Path(c.__file__).parent / "layouts",
    }


@dataclass(frozen=True)
class Room:
    """A floor plan: its receptacle instances (id -> class, pose) and its object classes."""

    number: int
    kind: str
    receptacles: tuple[tuple[str, str, tuple[float, float, int, int]], ...]
    classes: frozenset[str]

    @property
    def receptacle_types(self) -> set[str]:
        return {cls for _, cls, _ in self.receptacles}

    @property
    def pickupable(self) -> set[str]:
        t = _tables()
        return {c for c in self.classes if c in t["pickupable"] and self.holders(c)}

    def holders(self, obj: str, exclude: frozenset[str] = frozenset()) -> list[str]:
        """Receptacle types of this room that can hold ``obj``."""
        holds = _tables()["holds"]
        return sorted(r for r in self.receptacle_types if obj in holds.get(r, ()) and r not in exclude)


def room_kind(number: int) -> str:
    return next(kind for kind, rng in ROOM_TYPES.items() if number in rng)


@functools.lru_cache(maxsize=None)
def load_room(number: int) -> Room:
    """Read one floor plan from the wheel and complete the receptacles its navigation file omits."""
    t = _tables()
    base = t["layouts"] / f"FloorPlan{number}"
    classes = frozenset(json.loads((base.parent / f"{base.name}-objects.json").read_text()))
    poses = json.loads((base.parent / f"{base.name}-openable.json").read_text())
    receptacles = []
    for obj_id, pose in sorted(poses.items()):
        parts = obj_id.split("|")
        cls = parts[-1] if len(parts) > 4 else parts[0]  # "Sink|x|y|z|SinkBasin" is a SinkBasin
        if cls in t["static"]:
            receptacles.append((obj_id, cls, (float(pose[0]), float(pose[1]), int(pose[2]), int(pose[3]))))
    present = {cls for _, cls, _ in receptacles}
    # Receptacle classes the room has (objects.json) but the navigation file lacks (garbage cans,
    # stove burners, toasters, towel holders...): give them ids and poses drawn from the room number.
    rng = random.Random(f"room:{number}")
    for cls in sorted(classes):
        target = {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}.get(cls, cls)
        if target not in t["static"] or target in present:
            continue
        for _ in range(EXTRA_RECEPTACLE_COUNT.get(target, 1)):
            x, y, z = rng.uniform(-3, 3), rng.uniform(0, 1.5), rng.uniform(-3, 3)
            pos = f"{x:+06.2f}|{y:+06.2f}|{z:+06.2f}"
            obj_id = f"{cls}|{pos}|{target}" if target != cls else f"{cls}|{pos}"
            pose = (round(x * 4) / 4, round(z * 4) / 4, rng.choice((0, 90, 180, 270)), rng.choice((0, 30, 60)))
            receptacles.append((obj_id, target, pose))
        present.add(target)
    return Room(number, room_kind(number), tuple(receptacles), classes)


def rooms_for(split: str) -> tuple[int, ...]:
    """The floor plans a split draws from: valid_unseen's rooms are never used by train."""
    if split == "valid_unseen":
        return UNSEEN_ROOMS
    train_rooms = [n for rng in ((7, 31), (207, 231), (307, 331), (407, 431)) for n in range(*rng)]
    return tuple(n for n in train_rooms if n not in UNSEEN_ROOMS)


@dataclass(frozen=True)
class TaskSpec:
    """What a game asks (the part of a game that names it), drawn before the scene is populated."""

    task_type: str
    object_target: str
    parent_target: str  # "" for look_at_obj_in_light
    toggle_target: str  # "" unless look_at_obj_in_light
    scene: int

    @property
    def dirname(self) -> str:
        """Upstream's directory name: ``<task_type>-<object>-<mrecep>-<parent or toggle>-<scene>``."""
        last = self.parent_target or self.toggle_target
        return f"{self.task_type}-{self.object_target}-None-{last}-{self.scene}"


def task_type_at(split: str, index: int) -> str:
    """The task type of game ``index``: a smooth weighted round robin over upstream's mix.

    Every prefix of the sequence follows the mix as closely as integers allow, and one full cycle of
    the eval mixes (140 / 134 games) gives exactly upstream's per-type counts.
    """
    cycle = _mix_cycle(split)
    return cycle[index % len(cycle)]


@functools.lru_cache(maxsize=None)
def _mix_cycle(split: str) -> tuple[str, ...]:
    weights = UPSTREAM_MIX[split]
    total = sum(weights.values())
    current = dict.fromkeys(TASK_TYPES, 0)
    cycle = []
    for _ in range(total):
        for t in TASK_TYPES:
            current[t] += weights[t]
        chosen = max(TASK_TYPES, key=lambda t: current[t])  # ties: the first in TASK_TYPES
        current[chosen] -= total
        cycle.append(chosen)
    return tuple(cycle)


def _candidates(task_type: str, room: Room) -> list[tuple[str, str, str]]:
    """(object, parent, toggle) choices this room supports for ``task_type``."""
    t = _tables()
    if room.kind not in TASK_ROOM_TYPES[task_type]:
        return []
    out = []
    if task_type == "look_at_obj_in_light":
        if not any(r in room.receptacle_types for r in LAMP_SURFACES):
            return []
        for lamp in sorted(set(LAMPS) & room.classes):
            out += [(obj, "", lamp) for obj in sorted(room.pickupable)]
        return out
    appliance = TASK_APPLIANCE.get(task_type)
    if appliance and appliance not in room.receptacle_types:
        return []
    objs = room.pickupable
    if task_type in TASK_PROPERTY:
        objs &= t["actions"][TASK_PROPERTY[task_type]]
    excluded = frozenset({appliance, "BathtubBasin"} if appliance else ())
    for obj in sorted(objs):
        for parent in room.holders(obj, exclude=excluded):
            # Some other receptacle must hold the object at the start, or the goal starts satisfied.
            if room.holders(obj, exclude=frozenset({parent})):
                out.append((obj, parent, ""))
    return out


def task_spec(split: str, index: int, seed: int) -> TaskSpec:
    """The task of game ``index`` of ``split``: cheap (no engine), so task ids list instantly."""
    if split not in SPLITS:
        raise ValueError(f"unknown ALFWorld split {split!r}; known: {', '.join(SPLITS)}")
    task_type = task_type_at(split, index)
    rng = random.Random(f"madopd-alfworld:{seed}:{split}:{index}:task")
    rooms = [n for n in rooms_for(split) if room_kind(n) in TASK_ROOM_TYPES[task_type]]
    for _ in range(100):
        room = load_room(rng.choice(rooms))
        options = _candidates(task_type, room)
        if options:
            obj, parent, toggle = rng.choice(options)
            return TaskSpec(task_type, obj, parent, toggle, room.number)
    raise RuntimeError(f"no room of split {split!r} supports a {task_type} task")  # cannot happen with the wheel


def game_id(split: str, index: int, seed: int) -> str:
    """The id of a generated game, the path of its directory relative to the data root."""
    return f"{split}/{task_spec(split, index, seed).dirname}/trial_G{seed}_{index:05d}"


# -- populating a scene and writing its PDDL problem ---------------------------------------------
def mangle(name: str) -> str:
    """ALFRED's object-id mangling (``|`` -> ``_bar_``...), as in upstream's problem files."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(a, b)
    return name


def _location(pose: tuple[float, float, int, int]) -> str:
    x, z, rot, horizon = pose
    return mangle(f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{rot // 90 % 4}|{horizon}")


def _instance_id(cls: str, near: str, rng: random.Random, taken: set[str]) -> str:
    """A fresh ALFRED-style id ``Class|x|y|z`` near the receptacle ``near`` (ids must be unique)."""
    parts = near.split("|")
    x, y, z = (float(v) for v in parts[1:4])
    while True:
        pos = (x + rng.uniform(-0.4, 0.4), y + rng.uniform(0.0, 0.3), z + rng.uniform(-0.4, 0.4))
        obj_id = f"{cls}|" + "|".join(f"{v:+06.2f}" for v in pos)
        if obj_id not in taken:
            taken.add(obj_id)
            return obj_id


def populate(spec: TaskSpec, rng: random.Random, *, open_view: bool = False) -> dict[str, str]:
    """Place object instances in receptacles: object id -> receptacle id.

    With ``open_view`` the task's objects start outside closed receptacles (drawers, cabinets...)
    when the room allows it: the generator's fallback for tasks whose scenes the expert could not
    solve within the step limit (searching a kitchen's twenty cabinets twice takes too long).
    """
    t = _tables()
    room = load_room(spec.scene)
    by_type: dict[str, list[str]] = {}
    for rid, cls, _ in room.receptacles:
        by_type.setdefault(cls, []).append(rid)
    taken = {rid for rid, _, _ in room.receptacles}
    placement: dict[str, str] = {}
    for cls in sorted(room.pickupable):
        target = cls == spec.object_target
        if target and spec.task_type == "pick_two_obj_and_place":
            count = rng.randint(2, 3)
        else:
            count = rng.randint(1, 3) if target else rng.randint(1, 2)
        # The target never starts in a receptacle of the goal's type (the goal would hold already).
        types = room.holders(cls, exclude=frozenset({spec.parent_target}) if target else frozenset())
        if target and open_view and any(r not in t["openable"] for r in types):
            types = [r for r in types if r not in t["openable"]]
        hosts = [rid for r in types for rid in by_type[r]]
        for _ in range(count):
            host = rng.choice(hosts)
            placement[_instance_id(cls, host, rng, taken)] = host
    if spec.toggle_target:
        surfaces = [rid for r in LAMP_SURFACES if r in by_type for rid in by_type[r]]
        host = rng.choice(surfaces)
        placement[_instance_id(spec.toggle_target, host, rng, taken)] = host
    assert all(cls in t["objects"] for cls in {o.split("|")[0] for o in placement})
    return placement


def _goal(spec: TaskSpec) -> str:
    template = _tables()["goals"][spec.task_type]["pddl"]
    # The library writes "#" for PDDL's "-" (it is a format string) and its last ")" closes the define.
    return template.format(obj=spec.object_target, recep=spec.parent_target, toggle=spec.toggle_target).replace("#", "-")


def pddl_problem(spec: TaskSpec, placement: dict[str, str], rng: random.Random, name: str) -> str:
    """The PDDL problem of a populated scene, laid out like upstream's ``initial_state.pddl``."""
    t = _tables()
    room = load_room(spec.scene)
    receptacles = {rid: (cls, pose) for rid, cls, pose in room.receptacles}
    rec_loc = {rid: _location(pose) for rid, (cls, pose) in receptacles.items()}
    used = set(rec_loc.values())
    while True:  # the agent starts somewhere that is not in front of a receptacle
        start = _location((rng.randint(-20, 20) / 4, rng.randint(-20, 20) / 4, rng.choice((0, 90, 180, 270)), 30))
        if start not in used:
            break
    obj_cls = {oid: oid.split("|")[0] for oid in placement}
    present = set(obj_cls.values())
    otypes = sorted((set(t["objects"]) | present) - t["static"])
    rtypes = sorted(t["static"])
    M = mangle

    objects = [f"{M(o)} - object" for o in sorted(placement)] + [f"{M(r)} - receptacle" for r in sorted(receptacles)]
    objects += [f"{loc} - location" for loc in sorted(used | {start})]
    init = [f"(receptacleType {M(r)} {cls}Type)" for r, (cls, _) in sorted(receptacles.items())]
    init += [f"(objectType {M(o)} {c}Type)" for o, c in sorted(obj_cls.items())]
    for r in sorted(room.receptacle_types):
        init += [f"(canContain {r}Type {o}Type)" for o in sorted(t["holds"].get(r, set()) & present)]
    lamps = set(LAMPS)
    init += [f"(pickupable {M(o)})" for o, c in sorted(obj_cls.items()) if c not in lamps]
    init += [f"(isReceptacleObject {M(o)})" for o, c in sorted(obj_cls.items()) if c in t["movable"]]
    init += [f"(openable {M(r)})" for r, (cls, _) in sorted(receptacles.items()) if cls in t["openable"]]
    init.append(f"(atLocation agent1 {start})")
    for prop, pred in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable"),
                       ("Toggleable", "toggleable")):
        # No "sliceable": upstream marks it only for sliced tasks, which ALFWorld excludes.
        init += [f"({pred} {M(o)})" for o, c in sorted(obj_cls.items()) if c in t["actions"][prop]]
    init += [f"(inReceptacle {M(o)} {M(r)})" for o, r in sorted(placement.items())]
    init += [f"(receptacleAtLocation {M(r)} {loc})" for r, loc in sorted(rec_loc.items())]
    init += [f"(objectAtLocation {M(o)} {rec_loc[r]})" for o, r in sorted(placement.items())]

    ind = "\n        "
    return (
        f"\n(define (problem {name})\n(:domain alfred)\n(:objects\nagent1 - agent\n"
        + ind.join(f"{o}Type - otype" for o in otypes) + "\n"
        + ind.join(f"{r}Type - rtype" for r in rtypes) + "\n"
        + ind + ind.join(objects) + "\n        )\n\n(:init\n" + ind + ind.join(init) + "\n        )\n\n"
        + _goal(spec)
    )


def traj_data(spec: TaskSpec, task_desc: str, game: str, seed: int, index: int) -> dict[str, Any]:
    """The fields of upstream's ``traj_data.json`` that ALFWorld reads, plus provenance."""
    return {
        "task_id": game.rsplit("/", 1)[-1],
        "task_type": spec.task_type,
        "scene": {"floor_plan": f"FloorPlan{spec.scene}", "scene_num": spec.scene},
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target,
            "toggle_target": spec.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "template_task_desc": task_desc,
        "madopd": {"generator": "madopd_envs.alfworld", "seed": seed, "index": index, "spec": asdict(spec)},
    }


def task_description(spec: TaskSpec, rng: random.Random) -> str:
    """One of the goal library's sentences for the task (upstream: ``get_templated_task_desc``)."""
    template = rng.choice(_tables()["goals"][spec.task_type]["templates"])
    return template.format(obj=spec.object_target.lower(), recep=spec.parent_target.lower(),
                           toggle=spec.toggle_target.lower(), mrecep="")
