"""A tiny random-weight Gemma 3 causal LM with a locally trained tokenizer, for fast tests.

Nothing comes from the hub: the tokenizer is a byte-level BPE trained on a few hundred
generated strings (byte-level so that any text, newlines included, round-trips exactly), and
the model is built from a config with random weights. Building takes well under a second.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3, as in Gemma


def _corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["Question", "Answer", "What", "is", "the", "sum", "of", "and", "times", "minus"]
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op = rng.choice(["+", "-", "*"])
        extra = " ".join(rng.choices(words, k=rng.randint(1, 5)))
        lines.append(f"Question: What is {a} {op} {b}?\nAnswer: {a + b}. {extra}\n")
    return lines


def build_tiny_model(dir: Path) -> Path:
    """Save a tiny Gemma3ForCausalLM and its tokenizer into ``dir``; return ``dir``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos_id = tok.token_to_id("<bos>")
    # Prepend <bos> like the (fixed) Gemma tokenizer does.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )

    config = Gemma3TextConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=bos_id,
        # Larger than the default 0.02 so greedy output depends on the prompt (a near-zero
        # init emits the same token whatever it reads, which would make batching tests vacuous).
        initializer_range=0.5,
        # Untied: with tied embeddings a random model mostly echoes its last token forever.
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = bos_id
    model.save_pretrained(dir)
    tokenizer.save_pretrained(dir)
    return dir


def load_reference(model_dir: Path, adapter_dir: Path | None = None) -> tuple[Any, Any]:
    """The tokenizer and the float32 model, with the LoRA adapter unmerged (plain PEFT) if
    given: the reference the backend's merged adapter must reproduce."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    return tokenizer, model.eval()


def greedy_text(tokenizer: Any, model: Any, prompt: str, max_tokens: int) -> str:
    """Greedy generation with plain transformers, cut after EOS as the backend cuts it."""
    import torch

    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **encoded,
            max_new_tokens=max_tokens,
            do_sample=False,
            temperature=None,
            top_k=None,
            top_p=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, encoded["input_ids"].shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    if eos in new:
        new = new[: new.index(eos) + 1]
    return tokenizer.decode(new, skip_special_tokens=True)
