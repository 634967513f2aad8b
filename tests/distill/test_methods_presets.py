"""Paper presets (``method=<name>_paper``): each loads, builds its method's Config, cites an upstream
file:line for every value, and holds the published values.

The expected values are read off the public code (chiefovoavicii/MAD-OPD@6c7a66a,
kokolerk/TCOD@465eef4); the citation beside each value in the YAML says where. Pinned here so a
change to a preset is a visible, reviewed change.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

METHOD_DIR = Path(__file__).resolve().parents[2] / "leaderboards" / "conf" / "distill" / "method"
MADOPD, TCOD = "chiefovoavicii/MAD-OPD@6c7a66a", "kokolerk/TCOD@465eef4"

# preset -> (upstream repository, expected values)
EXPECTED = {
    "opd_madopd_paper": (MADOPD, {"name": "opd", "divergence": "jsd", "beta": 0.5, "temperature": 0.7, "top_k": None,
                                  "sample_mode": "turn", "reduction": "sample_mean"}),
    "opad_paper": (MADOPD, {"name": "opad", "divergence": "jsd", "beta": 0.5, "temperature": 0.7, "top_k": None,
                            "sample_mode": "turn", "reduction": "sample_mean", "history": "expert"}),
    "mt_opd_paper": (MADOPD, {"name": "mt_opd", "divergence": "jsd", "beta": 0.5, "temperature": 1.0, "top_k": None,
                              "sample_mode": "turn", "reduction": "sample_mean", "teacher_weights": [0.5, 0.5],
                              "loop_filter": True, "loop_ngram": 3, "loop_max_ratio": 0.6, "history": "expert"}),
    "mad_opd_paper": (MADOPD, {"name": "mad_opd", "divergence": "auto", "beta": 0.5, "temperature": 1.0,
                               "top_k": None, "sample_mode": "turn", "reduction": "sample_mean", "rounds": 2,
                               "tau": 1.0, "dynamic_weights": True, "debate_max_new_tokens": 4096,
                               "debate_temperature": 0.7, "debate_top_p": 0.8, "loop_filter": True, "loop_ngram": 3,
                               "loop_max_ratio": 0.6, "history": "expert"}),
    "opd_tcod_paper": (TCOD, {"name": "opd", "divergence": "sampled_token", "kl_coef": 1.0, "clip_ratio": 0.2,
                              "temperature": 1.0, "sample_mode": "turn", "reduction": "token_mean",
                              "max_env_steps": 30}),
    "tcod_f2b_paper": (TCOD, {"name": "tcod", "variant": "f2b", "k_start": 1, "eta": 6, "divergence": "sampled_token",
                              "kl_coef": 1.0, "clip_ratio": 0.2, "temperature": 1.0, "sample_mode": "turn",
                              "reduction": "sample_mean", "max_env_steps": 30}),
    "tcod_b2f_paper": (TCOD, {"name": "tcod", "variant": "b2f", "k_start": 1, "eta": 5, "divergence": "sampled_token",
                              "kl_coef": 1.0, "clip_ratio": 0.2, "temperature": 1.0, "sample_mode": "turn",
                              "reduction": "token_mean", "max_env_steps": 30}),
}
CITATION = re.compile(r"#.*?[\w./-]+\.(?:py|sh|yaml):\d+")


def test_every_paper_preset_is_pinned():
    assert sorted(p.stem for p in METHOD_DIR.glob("*_paper.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_paper_preset_loads_cites_upstream_and_holds_the_published_values(preset):
    from madopd_distill.methods import method_class

    repo, expected = EXPECTED[preset]
    text = (METHOD_DIR / f"{preset}.yaml").read_text()
    assert repo in text  # the header names the repository and commit every path:line refers to
    conf = yaml.safe_load(text)
    assert conf == expected
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if key in conf and key != "name":
            assert CITATION.search(line), f"{preset}: no file:line citation for {key!r}: {line}"
    cls = method_class(conf.pop("name")).Config
    cfg = cls.from_dict(conf)
    for k, v in conf.items():
        assert getattr(cfg, k) == v


def test_presets_compose_with_hydra_and_overrides_still_apply():
    from madopd_distill.preflight import compose
    from madopd_distill.train import CONF_DIR, config_to_dict

    d = config_to_dict(compose(str(CONF_DIR), "train", ["method=mad_opd_paper", "student=x", "teacher=y",
                                                        "method.rounds=3"]))
    assert d["method"] == "mad_opd" and d["method_args"]["history"] == "expert"
    assert d["method_args"]["reduction"] == "sample_mean" and d["method_args"]["rounds"] == 3
