"""Peak memory and time of token-level divergences on real-vocabulary logits (fwd + bwd, CPU).

Side by side, each variant in a fresh subprocess (peak RSS via ``ru_maxrss`` is per process):

- ``chunked``: :func:`madopd_distill.divergences.chunked_divergence` (analytic gradient, row chunks);
- ``autograd``: :func:`madopd_distill.divergences.logits_divergence` (log_softmax both + autograd);
- ``trl``: TRL's ``GKDTrainer.generalized_jsd_loss`` (``pip install -c constraints.txt trl``).

Memory is reported as ``(peak RSS - RSS before the inputs) / bytes of the two input logit tensors``,
so the interpreter and torch's own footprint do not count: the peak (``VmHWM``, the counter behind
``ru_maxrss``) is reset after the imports. The chunked variant's working set is ~6 fp32 temporaries of
``chunk x V`` (233 MB at chunk 64, V 151936), which dominates at small sizes. ``--sizes`` takes ``BxTxV`` items.

    python benchmarks/bench_divergence.py                                  # side by side, TRL-sized
    python benchmarks/bench_divergence.py --sizes 4x1024x151936 --variants chunked --betas 1.0 0.5 0.0

Set ``OMP_NUM_THREADS`` (1 on a shared machine). A variant that cannot allocate is reported as
``failed`` with the error, not hidden.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from peak_memory import peak_bytes, reset_peak, rss_bytes  # noqa: E402 -- beside this script

GIB = 1024**3


def child(variant: str, b: int, t: int, v: int, beta: float, chunk: int) -> dict:
    """Runs in the subprocess: allocate inputs, one fwd+bwd, report time and memory."""
    import torch

    from madopd_distill.divergences import chunked_divergence, logits_divergence

    if variant == "trl":
        from trl.experimental.gkd import GKDTrainer
    torch.manual_seed(0)
    reset_peak()
    base = rss_bytes()  # after the imports: only what the computation allocates counts
    student = torch.randn(b, t, v, dtype=torch.float32, requires_grad=True)
    teacher = torch.randn(b, t, v, dtype=torch.float32)
    inputs = 2 * student.numel() * student.element_size()
    after_inputs = rss_bytes()
    t0 = time.perf_counter()
    if variant == "chunked":
        kind = {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta, "jsd")
        loss = chunked_divergence(student, teacher, kind, beta, chunk_size=chunk).mean()
    elif variant == "autograd":
        kind = {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta, "jsd")
        loss = logits_divergence(student, teacher, kind, beta).mean()
    elif variant == "trl":
        labels = torch.zeros(b, t, dtype=torch.long)  # all positions count: a per-token mean like the others
        loss = GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)
    else:
        raise ValueError(variant)
    t_fwd = time.perf_counter() - t0
    loss.backward()
    elapsed = time.perf_counter() - t0
    peak = peak_bytes()  # the high-water mark since reset_peak (same counter as ru_maxrss)
    return {"variant": variant, "B": b, "T": t, "V": v, "beta": beta, "loss": float(loss), "fwd_s": t_fwd,
            "fwd_bwd_s": elapsed, "inputs_gb": inputs / GIB, "peak_gb": (peak - base) / GIB,
            "ratio_to_inputs": (peak - base) / inputs, "inputs_rss_gb": (after_inputs - base) / GIB}


def run_one(variant: str, b: int, t: int, v: int, beta: float, chunk: int, mem_limit_gb: float | None) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([variant, b, t, v, beta, chunk])]
    pre = None
    if mem_limit_gb:
        import resource

        lim = int(mem_limit_gb * GIB)
        pre = lambda: resource.setrlimit(resource.RLIMIT_AS, (lim, lim))  # noqa: E731
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["killed"])[-1]
        return {"variant": variant, "B": b, "T": t, "V": v, "beta": beta, "failed": tail[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1x256x151936", "1x512x151936"])
    ap.add_argument("--variants", nargs="+", default=["chunked", "autograd", "trl"])
    ap.add_argument("--betas", nargs="+", type=float, default=[0.5, 1.0])
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--mem-limit-gb", type=float, default=20.0, help="address-space cap per variant process")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    rows = []
    for size in args.sizes:
        b, t, v = (int(x) for x in size.lower().split("x"))
        for beta in args.betas:
            for variant in args.variants:
                row = run_one(variant, b, t, v, beta, args.chunk, args.mem_limit_gb)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'size':>16} {'beta':>4} {'variant':>9} {'fwd+bwd s':>9} {'peak GB':>8} {'x inputs':>8} "
          f"{'time vs chunked':>15} {'mem vs chunked':>14}")
    for row in rows:
        size = f"{row['B']}x{row['T']}x{row['V']}"
        if "failed" in row:
            print(f"{size:>16} {row['beta']:>4} {row['variant']:>9}   failed: {row['failed']}")
            continue
        ref = next((r for r in rows if r["variant"] == "chunked" and "failed" not in r and r["B"] == row["B"]
                    and r["T"] == row["T"] and r["V"] == row["V"] and r["beta"] == row["beta"]), None)
        tr = f"{row['fwd_bwd_s'] / ref['fwd_bwd_s']:.2f}x" if ref else "-"
        mr = f"{row['peak_gb'] / ref['peak_gb']:.2f}x" if ref else "-"
        print(f"{size:>16} {row['beta']:>4} {row['variant']:>9} {row['fwd_bwd_s']:>9.2f} {row['peak_gb']:>8.2f} "
              f"{row['ratio_to_inputs']:>8.2f} {tr:>15} {mr:>14}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
