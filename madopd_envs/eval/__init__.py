"""Evaluation of agents on environments: ``python -m madopd_envs.eval`` (CLI), runner, results, tables.

Importing this package imports no agent or model library; the CLI reaches agents through the agent
registry's lazy ``"module:Class"`` backends.
"""
