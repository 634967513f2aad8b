"""Comparative studies: every OPD method side by side, on equal footing, with intervals.

    python -m madopd_distill.study study=<name> [key=value ...] [--cells PATTERNS] [--jobs N]

A study (``leaderboards/conf/study/<name>.yaml``, :class:`~madopd_distill.study.config.StudyConfig`)
names the env, disjoint train / held-out task sets, the teachers, the initial student, the methods
(each with only what its paper changes over one shared base), the seeds and one budget. Each
(method, seed) cell is a training run (``madopd_distill.train`` or ``.sft``) in its own folder
(:mod:`~madopd_distill.study.runner`); the initial student, the teachers and every final student
are then evaluated by ``madopd_envs.eval`` on the same held-out episodes, so the results are ordinary
leaderboard records; :mod:`~madopd_distill.study.results` turns them into the table with hierarchical
bootstrap intervals, paired differences to ``opd``, the papers' claims' verdicts and the curves.
"""

from madopd_distill.study.config import Cell, StudyConfig, StudyError, build_cells, load_study

__all__ = ["Cell", "StudyConfig", "StudyError", "build_cells", "load_study"]
