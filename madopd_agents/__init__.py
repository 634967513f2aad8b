"""madopd_agents: agent policies behind one batched protocol (``madopd_agents.base``).

Backends: ``hf`` (transformers), ``vllm``, ``openai`` (HTTP), scripted ``expert``/``random``; agent cards in
``leaderboards/conf/agent`` (``madopd_agents.registry``); offline models in ``madopd_agents.zoo``; an
OpenAI-compatible server in ``madopd_agents.serve``. Importing the package imports no model library.
"""
