"""Agent cards: a name -> backend + model + sampling + prompt format, from YAML files.

Cards live in ``leaderboards/conf/agent/<name>.yaml`` (any config root, see
``madopd_envs.conf.conf_dirs``); adding an agent is adding a YAML file::

    name: my_agent            # defaults to the file name
    backend: hf               # hf | vllm | openai | expert | random | "package.module:Class"
    model: Qwen/Qwen3-4B      # repo id (local HF cache), folder, or zoo:<name>
    sampling: {temperature: 0.7, top_p: 0.8, max_new_tokens: 256}
    prompt: {history: 8}      # madopd_envs.prompts.PromptFormat fields
    args: {enable_thinking: false, batch_size: 8}   # backend constructor arguments

Backends are lazy ``"module:Class"`` strings with a ``from_card(card)`` classmethod, so importing the
registry imports no model library; ``build_agent`` fails within seconds with a message saying how to
provide missing weights (:class:`~madopd_agents.zoo.ModelUnavailableError`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from madopd_agents.base import SamplingParams
from madopd_envs.conf import ConfigError, list_configs, load_yaml

BACKENDS: dict[str, str] = {
    "hf": "madopd_agents.hf:HFAgent",
    "vllm": "madopd_agents.vllm:VLLMAgent",
    "openai": "madopd_agents.openai:OpenAIAgent",
    "expert": "madopd_agents.scripted:ExpertAgent",
    "random": "madopd_agents.scripted:RandomAgent",
}
_CARD_KEYS = {"name", "backend", "model", "description", "license"}
_PROMPT_KEYS = {"history", "show_actions", "max_actions", "max_observation_chars", "instructions", "system_extra"}
_SAMPLING_KEYS = {f.name for f in fields(SamplingParams)}


@dataclass(frozen=True)
class AgentCard:
    """What an agent is.

    Attributes:
        name: the agent's name in results and tables.
        backend: a key of ``BACKENDS`` or a ``"module:Class"`` string.
        model: weights: HF repo id, local folder or ``zoo:<name>``; ``None`` for scripted agents.
        sampling: ``SamplingParams`` fields.
        prompt: ``PromptFormat`` fields (``madopd_envs.prompts``).
        args: keyword arguments of the backend (``batch_size``, ``enable_thinking``, ``base_url``...).
        source: the YAML file the card came from.
    """

    name: str
    backend: str
    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    prompt: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    license: str = ""
    source: str = ""

    @property
    def sampling_params(self) -> SamplingParams:
        d = dict(self.sampling)
        if "stop" in d:
            d["stop"] = tuple(d["stop"] or ())
        return SamplingParams(**d)

    @property
    def needs_expert(self) -> bool:
        """Envs must expose ``info["expert_action"]`` to this agent (only the expert backend)."""
        return bool(getattr(_resolve(self.backend), "needs_expert", False))

    def with_overrides(self, overrides: dict[str, Any]) -> AgentCard:
        """``--agent-args`` applied: card keys, sampling keys, prompt keys, else backend args."""
        card: dict[str, Any] = {}
        sampling, prompt, args = dict(self.sampling), dict(self.prompt), dict(self.args)
        for k, v in overrides.items():
            if k in _CARD_KEYS:
                card[k] = v
            elif k in _SAMPLING_KEYS:
                sampling[k] = v
            elif k in _PROMPT_KEYS:
                prompt[k] = v
            else:
                args[k] = v
        new = replace(self, sampling=sampling, prompt=prompt, args=args, **card)
        try:
            new.sampling_params  # validate now, not mid-eval
        except (TypeError, ValueError) as e:
            raise ConfigError(f"agent {self.name}: bad sampling settings {sampling}: {e}") from e
        return new


def parse_agent_args(text: str | None) -> dict[str, Any]:
    """``"k=v,k2=v2"`` -> dict, values parsed as YAML scalars (``0.7``, ``true``, ``null``, ``[a, b]``)."""
    import yaml

    out: dict[str, Any] = {}
    if not text:
        return out
    parts, depth, cur = [], 0, ""
    for ch in text:  # commas inside [...] or {...} belong to the value
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for part in (p.strip() for p in parts):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--agent-args expects k=v pairs separated by commas; got {part!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def agent_names() -> list[str]:
    return sorted(list_configs("agent"))


def get_card(name: str) -> AgentCard:
    """The card ``name`` from ``agent/<name>.yaml``; unknown names fail with close matches."""
    import difflib

    configs = list_configs("agent")
    if name not in configs and "/" in name:  # a zoo model: <recipe>/<model>
        from madopd_agents.zoo import zoo_agent_card

        if (zoo := zoo_agent_card(name)) is not None:
            return AgentCard(source=f"zoo:{zoo['name']}", **zoo)
    if name not in configs:
        close = difflib.get_close_matches(name, list(configs), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"no agent card {name!r}.{hint} Known: {', '.join(sorted(configs))}, and built zoo "
                          f"models (python -m madopd_agents.zoo list). Add one as leaderboards/conf/agent/{name}.yaml.")
    path = configs[name]
    data = load_yaml(path)
    allowed = {f.name for f in fields(AgentCard)} - {"source"}
    unknown = set(data) - allowed
    if unknown or "backend" not in data:
        raise ConfigError(f"{path}: an agent card needs 'backend' and may have {sorted(allowed)}; "
                          f"unexpected {sorted(unknown)}")
    data.setdefault("name", name)
    for key in ("sampling", "prompt", "args"):
        data[key] = dict(data.get(key) or {})
    return AgentCard(source=str(path), **data)


def _resolve(backend: str) -> Any:
    target = BACKENDS.get(backend, backend)
    if ":" not in target:
        raise ConfigError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)} or 'package.module:Class'")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_agent(card: AgentCard | str, **overrides: Any) -> Any:
    """The agent a card describes (``overrides`` as in ``--agent-args``)."""
    if isinstance(card, str):
        card = get_card(card)
    if overrides:
        card = card.with_overrides(overrides)
    return _resolve(card.backend).from_card(card)
