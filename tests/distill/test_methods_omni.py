"""OmniOPD mechanics: peak-entropy forks, the Dirichlet-Multinomial reward, the anchored loss, offline
embeddings, the entropy scheduler, and a text-only OpenAI-compatible teacher through the real server."""

import math

import pytest
import torch

from madopd_distill.methods.omni_core import (cluster_outcomes, dm_chunk_reward, k3_kl, omni_row_loss,
                                             peak_entropy_forks)


def test_peak_entropy_forks():
    ent = [0.1, 0.9, 0.2, 0.1, 0.3, 2.0, 0.4, 1.5, 0.2, 0.1]
    assert peak_entropy_forks(ent, max_forks=2, fork_quantile=0.5, min_gap=1) == [5, 7]
    # min_gap drops the second peak near the first
    assert peak_entropy_forks(ent, max_forks=2, fork_quantile=0.5, min_gap=3) == [1, 5]
    assert peak_entropy_forks(ent, max_forks=1, fork_quantile=0.0, min_gap=1) == [5]
    assert peak_entropy_forks([], max_forks=2) == []
    assert peak_entropy_forks(ent, max_forks=3, fork_quantile=0.0, min_gap=1, min_entropy=1.0) == [5, 7]


def test_dirichlet_multinomial_reward_matches_a_hand_computed_posterior():
    e1, e2, e3 = torch.eye(3)
    # M=3 continuations, two semantic outcomes (e1 twice, e2 once) + the prior's "unseen" outcome: K=3.
    conts = torch.stack([e1, e1, e2])
    assert cluster_outcomes(conts, 0.9) == [[0, 1], [2]]
    # alpha=1: posterior Dirichlet(1+2, 1+1, 1+0) = (3, 2, 1) / 6; the chunk is e1: similarities (1, 0, 0).
    r, sd, k = dm_chunk_reward(e1, conts, alpha=1.0, cluster_threshold=0.9)
    assert k == 3 and r == pytest.approx(3 / 6)
    # posterior std of sum_k p_k s_k: sqrt((sum a~ s^2 - r^2) / (A + 1)) = sqrt((1/2 - 1/4) / 7)
    assert sd == pytest.approx(math.sqrt((0.5 - 0.25) / 7))
    # the raw Monte-Carlo frequency would be 2/3: the prior pulls it towards 1/K
    assert dm_chunk_reward(e1, conts, alpha=0.0, cluster_threshold=2.0)[0] == pytest.approx(2 / 3)
    # a chunk the teacher never wrote earns only the unseen outcome's share
    assert dm_chunk_reward(e3, conts, alpha=1.0)[0] == pytest.approx(0.0)
    assert dm_chunk_reward(e3, conts, alpha=1.0, unseen_similarity=0.5)[0] == pytest.approx(0.5 / 6)
    # more evidence for the same outcome -> smaller posterior std, reward closer to the MC value
    r4, sd4, _ = dm_chunk_reward(e1, torch.stack([e1] * 8), alpha=1.0)
    assert r4 == pytest.approx(9 / 10) and sd4 < sd
    with pytest.raises(ValueError):
        dm_chunk_reward(e1, torch.zeros(0, 3))


def test_omni_row_loss_gradient_direction_and_anchor():
    logits = torch.zeros(6, requires_grad=True)
    logp = torch.nn.functional.logsigmoid(logits)  # stand-in per-token log-probs
    adv = torch.tensor([0.0, 0.4, 0.4, -0.4, -0.4, 0.0])  # chunk 1 good, chunk 2 bad, others outside
    per_row, kl = omni_row_loss(logp, logp.detach(), adv, kl_coef=0.1)
    per_row.sum().backward()
    g = logits.grad
    assert g[1] < 0 and g[2] < 0  # good chunk: descent raises its log-prob
    assert g[3] > 0 and g[4] > 0  # bad chunk: lowered
    assert g[0] == 0 and g[5] == 0  # no reward, anchor at its minimum (student == reference)
    assert float(kl.abs().sum()) == 0.0
    assert float(k3_kl(torch.tensor([-1.0]), torch.tensor([-2.0]))) > 0
    # away from the reference the anchor alone pulls back
    x = torch.tensor([-0.5], requires_grad=True)
    loss, _ = omni_row_loss(x, torch.tensor([-1.0]), torch.zeros(1), kl_coef=1.0)
    loss.sum().backward()
    assert float(loss.detach()) > 0 and float(x.grad) > 0  # descent lowers log p back towards the reference


def test_embedder_offline_similarity():
    from madopd_distill.methods.omni_core import shared_embedder

    emb = shared_embedder()
    sims = emb.similarities(["open the fridge"], [["open fridge", "go north to the garden"]])
    assert sims[0][0] > 0.8 > sims[0][1]


def test_entropy_scheduler_reads_the_students_full_distribution():
    from madopd_agents.zoo import tiny_model_dir
    from madopd_distill.methods.omni import student_entropies
    from madopd_distill.rollout import Sample
    from madopd_distill.trainer import load_causal_lm

    model, tok = load_causal_lm(str(tiny_model_dir("S", seed=0)))
    model.train()
    ids = tok("go north then take the coin", add_special_tokens=False)["input_ids"]
    mask = [False, False] + [True] * (len(ids) - 2)
    [ent] = student_entropies(model, tok, [Sample(ids, mask, [0.0] * len(ids))])
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0, 1:-1].float(), -1)  # predicts ids[2:]
    assert torch.allclose(ent, -(lp.exp() * lp).sum(-1), atol=1e-4)
    assert model.training  # the no-grad pass leaves the trained model's mode alone


def test_text_only_openai_teacher_drives_omni_through_the_local_server(tmp_path):
    """``python -m madopd_agents.serve`` on 127.0.0.1 writes OmniOPD's continuations; it serves chat text
    only (no /completions, no /tokenize), so this runs only if the teacher is built text-only."""
    from cli_runs import read_log, run_train
    from served import served_model

    from madopd_agents.zoo import tiny_model_dir
    from madopd_distill.trainer import TeacherSpec, build_teachers

    s0, s1 = str(tiny_model_dir("S", seed=0)), str(tiny_model_dir("S", seed=1))
    with served_model(s1, "writer") as base:
        teachers, agents = build_teachers([TeacherSpec(name="writer", backend="openai", base_url=base, model="writer",
                                                       text_only=True)], student_tokenizer=None)
        assert teachers == {} and type(agents["writer"]).__name__ == "OpenAIAgent"  # writes, never scores
        out = tmp_path / "omni"
        run_train(["method=omni", "env=madopd/TWX-Coin-v0", f"student={s0}", "steps=2", "rollout.num_envs=1",
                   "rollout.tasks_per_step=1", "rollout.max_new_tokens=8", "rollout.max_env_steps=2",
                   "micro_batch_tokens=4096", f"teachers=[{{name:anchor,backend:hf,path:{s0}}},{{name:writer,"
                   f"backend:openai,base_url:'{base}',model:writer,text_only:true}}]", "method.teacher=writer",
                   "method.chunk_tokens=4", "method.num_continuations=2", "method.fork_quantile=0.5",
                   f"output_dir={out}"])
    steps = read_log(out, "train")
    assert [r["step"] for r in steps] == [1, 2]
    assert sum(r["omni/forks"] for r in steps) > 0
    assert all(r["omni/continuations"] == 2 * r["omni/forks"] for r in steps)  # M answers per fork, over HTTP
    assert all(r["loss"] == r["loss"] for r in steps)
