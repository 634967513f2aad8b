"""The teacher zoo's builder: recipes (``recipe.py``), data and protocol texts (``data.py``), training
and measurement (``build.py``). The user-facing CLI is ``python -m madopd_agents.zoo``."""

from madopd_distill.zoo.recipe import Recipe, RecipeError

__all__ = ["Recipe", "RecipeError", "load_recipe"]


def load_recipe(name: str, overrides: list[str] | None = None) -> Recipe:
    """``leaderboards/conf/zoo/<name>.yaml`` (or a path to a YAML file) with ``key=value`` overrides."""
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from madopd_envs.conf import conf_dirs

    path = Path(name)
    if not path.is_file():
        found = [r / "zoo" / f"{name}.yaml" for r in conf_dirs() if (r / "zoo" / f"{name}.yaml").is_file()]
        if not found:
            known = sorted({p.stem for r in conf_dirs() for p in (r / "zoo").glob("*.yaml")})
            raise RecipeError(f"no zoo recipe {name!r}; known: {', '.join(known) or 'none'} "
                              f"(leaderboards/conf/zoo/<name>.yaml)")
        path = found[0]
    try:
        cfg = OmegaConf.load(path)
        for item in overrides or []:  # key=value, keys may index lists: teachers.0.policy.steps=50
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"overrides look like key=value; got {item!r}")
            OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=True)
        data = OmegaConf.to_container(cfg, resolve=True)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as e:
        raise RecipeError(f"recipe {path}: {str(e).splitlines()[0]}") from None
    data.setdefault("name", path.stem)
    return Recipe.from_dict(data)
