"""``python -m madopd_agents.zoo build <recipe> [key=value ...]``: the build half of the zoo CLI
(it trains models, so it lives in the distillation layer; the agents layer reaches it lazily)."""

from __future__ import annotations

import shlex
import sys


def build_main(argv: list[str]) -> int:
    from madopd_agents.zoo import ModelUnavailableError
    from madopd_distill.zoo import RecipeError, load_recipe
    from madopd_distill.zoo.build import check_bases

    if not argv or argv[0].startswith("-"):
        print("usage: python -m madopd_agents.zoo build <recipe> [key=value ...]", file=sys.stderr)
        return 2
    try:
        recipe = load_recipe(argv[0], argv[1:])
        _check_env(recipe.env)
        check_bases(recipe)
    except ModelUnavailableError as e:
        print(f"error: {str(e).splitlines()[0]} Point the recipe's base at a model folder, an HF id in the local "
              f"cache or a zoo name (python -m madopd_agents.zoo list), or use base=new.", file=sys.stderr)
        return 2
    except (RecipeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from madopd_distill.zoo.build import PropertyError, build

    try:
        build(recipe, command="python -m madopd_agents.zoo build " + " ".join(shlex.quote(a) for a in argv))
    except PropertyError as e:  # the models and their figures are written; the zoo is not fit for distillation
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _check_env(env_id: str) -> None:
    """An unknown env or a missing engine fails before any model is built."""
    import madopd_envs

    try:
        madopd_envs.spec(env_id)
    except Exception as e:  # UnknownEnvError, a missing engine: the message says what to do
        raise ValueError(str(e).splitlines()[0]) from None
