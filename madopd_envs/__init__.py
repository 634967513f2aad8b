"""madopd_envs: multi-turn text environments behind one Gymnasium contract.

    import madopd_envs
    env = madopd_envs.make("madopd/TWX-CookingWorld-v0")
    obs, info = env.reset(seed=0)

Importing this package is cheap: engines load when an env is made.
"""

from madopd_envs.core import StepInfo, TextEnv
from madopd_envs.registry import EnvCard, make, register, registered, spec
from madopd_envs.vector import TextVectorEnv, make_vec

__all__ = ["EnvCard", "StepInfo", "TextEnv", "TextVectorEnv", "make", "make_vec", "register", "registered", "spec"]
