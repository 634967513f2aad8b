"""The built-in environments: one ``register(...)`` line (or loop) per environment.

Adding an environment = one file with a ``TextEnv`` subclass + one ``register`` line here. The
conformance test (tests/envs/test_conformance.py) picks every registered id up by itself.
"""

from madopd_envs.registry import EnvCard, register

# -- TextWorldExpress: 8 fast JVM games (the CPU-scale distillation family) ---------------------
_TWX_NAMES = {"cookingworld": "CookingWorld", "twc": "TWC", "coin": "Coin", "mapreader": "MapReader",
              "arithmetic": "Arithmetic", "sorting": "Sorting", "simonsays": "SimonSays", "peckingorder": "PeckingOrder"}
for _game, _name in _TWX_NAMES.items():
    register(
        f"madopd/TWX-{_name}-v0",
        "madopd_envs.textworldexpress.env:TWXEnv",
        max_episode_steps=50,
        kwargs={"game": _game},
        card=EnvCard(
            family="textworldexpress",
            splits={"train": 1000, "valid": 1000, "test": 1000},
            metrics="won: engine tasksuccess; score: engine score clipped to [0, 1]; raw_score: engine score",
            extra="twx",
            requires=("textworld_express",),
            license="TextWorldExpress (Apache-2.0), games generated from seeds by the engine",
            description=f"TextWorldExpress {_game}",
        ),
    )
