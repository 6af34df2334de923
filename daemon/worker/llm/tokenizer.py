"""gpuprof's own tokenizer for synthetic-weight models: a byte-level BPE that works with no model hub.

It is trained, deterministically, on the built-in prompt sets (``prompts/*.jsonl``) and shipped as
``tokenizer.json``; ``python -m gpuprof.daemon.worker.llm.tokenizer OUT`` builds it again, byte for byte.
Being byte-level it encodes any text. Its vocabulary (VOCAB_SIZE entries) is smaller than the real
models', so a prompt's token count differs from what the released model's tokenizer would give: results
name the tokenizer used (docs/llm.md).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import GpuprofError

__all__ = ["BOS", "EOS", "PAD", "TOKENIZER_NAME", "VOCAB_SIZE", "build_tokenizer", "load_tokenizer"]

VOCAB_SIZE = 8192
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
TOKENIZER_NAME = f"gpuprof-bpe-{VOCAB_SIZE}"
_FILE = "tokenizer.json"
_PROMPT_FIELDS = ("context", "question", "endings", "best_answer", "correct_answers", "incorrect_answers")


def _training_text() -> list[str]:
    """Every text of the built-in prompt sets, in a fixed order."""
    texts: list[str] = []
    folder = resources.files("gpuprof.daemon.worker.llm") / "prompts"
    for name in sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".jsonl")):
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            for key in _PROMPT_FIELDS:
                value = item.get(key)
                texts.extend(value if isinstance(value, list) else [value] if value else [])
    return texts


def build_tokenizer() -> Any:
    """Trains the tokenizer on the built-in prompt sets (deterministic: one thread, fixed input order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_text(), trainer=trainer)
    return tokenizer


def load_tokenizer() -> Any:
    """The shipped tokenizer as a transformers tokenizer, padding on the left (for batched generation)."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError as exc:
        raise GpuprofError(f"LLM jobs need transformers ({exc}): pip install 'gpuprof[inference]'") from None
    path = resources.files("gpuprof.daemon.worker.llm") / _FILE
    with resources.as_file(path) as file:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(file), bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
        )
    tokenizer.name_or_path = TOKENIZER_NAME
    return tokenizer


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m gpuprof.daemon.worker.llm.tokenizer OUT.json", file=sys.stderr)
        return 2
    build_tokenizer().save(str(Path(argv[0])), pretty=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
