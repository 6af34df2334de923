"""The study's architectures as transformers configs, for models with synthetic weights.

Each full config repeats the released model's ``config.json`` (layer count, widths, attention layout,
vocabulary, positional encoding), so that the compute and memory traffic of a forward pass match the real
model; only the weights are random. A ``-tiny`` variant keeps the model class and attention layout with
a few narrow layers (heads of 32 dimensions, the smallest vLLM's CPU attention takes) and gpuprof's own
vocabulary, for tests and CPU runs.
"""

from __future__ import annotations

from typing import Any

from gpuprof.client.wire.errors import JobSpecError
from gpuprof.client.wire.llm_spec import ARCHS

__all__ = ["arch_config", "arch_settings"]

_LLAMA_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
}
# (transformers config class, keyword arguments): meta-llama/Llama-3.2-1B, meta-llama/Llama-3.2-3B,
# mistralai/Mistral-7B-v0.1, tiiuae/falcon-7b, EleutherAI/gpt-neo-2.7B as released.
_FULL: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-3.2-1b": (
        "LlamaConfig",
        {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": _LLAMA_ROPE,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
        },
    ),
    "llama-3.2-3b": (
        "LlamaConfig",
        {
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "num_hidden_layers": 28,
            "num_attention_heads": 24,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 128256,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": _LLAMA_ROPE,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
        },
    ),
    "mistral-7b-v0.1": (
        "MistralConfig",
        {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 32000,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "sliding_window": 4096,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
        },
    ),
    "falcon-7b": (
        "FalconConfig",
        {
            "hidden_size": 4544,
            "num_hidden_layers": 32,
            "num_attention_heads": 71,
            "multi_query": True,
            "parallel_attn": True,
            "new_decoder_architecture": False,
            "alibi": False,
            "bias": False,
            "vocab_size": 65024,
            "layer_norm_epsilon": 1e-5,
            "max_position_embeddings": 2048,
        },
    ),
    "gpt-neo-2.7b": (
        "GPTNeoConfig",
        {
            "hidden_size": 2560,
            "num_layers": 32,
            "num_heads": 20,
            "attention_types": [[["global", "local"], 16]],
            "window_size": 256,
            "vocab_size": 50257,
            "max_position_embeddings": 2048,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
        },
    ),
}
_TINY_SHAPE: dict[str, dict[str, Any]] = {
    "LlamaConfig": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "max_position_embeddings": 16384,  # above the llama3 rope scaling's original length
    },
    "MistralConfig": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "sliding_window": 256,
    },
    "FalconConfig": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "GPTNeoConfig": {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "attention_types": [[["global", "local"], 1]],
    },
}


def arch_settings(name: str, vocab_size: int) -> tuple[str, dict[str, Any]]:
    """(config class name, keyword arguments) of architecture ``name``; tiny ones use ``vocab_size``."""
    if name not in ARCHS:
        raise JobSpecError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    base = name.removesuffix("-tiny")
    class_name, kwargs = _FULL[base]
    settings = dict(kwargs)
    if name.endswith("-tiny"):
        settings.update(_TINY_SHAPE[class_name], vocab_size=vocab_size)
    return class_name, settings


def arch_config(name: str, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> Any:
    """The transformers config of architecture ``name``, its special tokens those of our tokenizer."""
    import transformers

    class_name, settings = arch_settings(name, vocab_size)
    config = getattr(transformers, class_name)(
        **settings, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    return config
