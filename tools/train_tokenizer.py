"""Train a small byte-level BPE tokenizer on the TinyStories training text and save it as a transformers tokenizer.

Why: GPT-2's 50,257-token vocabulary makes the embedding and output matrices of a small model huge (50257 x d_model
each), which does not fit the 25 MB budget of the shipped checkpoint at a useful width. A 4096-token BPE trained on
TinyStories covers its simple vocabulary with short sequences and leaves the parameters to the transformer layers.

    python tools/train_tokenizer.py --data ../shared/tinystories --vocab-size 4096 \
        --out assets/checkpoints/llama3-tinystories

The folder then loads with ``llama3.load_tokenizer(folder)``: "<|endoftext|>" is EOS (it separates stories in the
text), "[PAD]" is the pad token. Validation text is never read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llama3.data import EOS_TOKEN, iter_training_texts
from llama3.files import PAD_TOKEN


def train_tokenizer(data: str | Path | None, vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2's scheme, so every byte string is encodable) with EOS and PAD as special tokens."""
    if vocab_size < 259:
        raise ValueError(f"vocab_size must be at least 259 (256 bytes + 2 special tokens + 1 merge), got {vocab_size}.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Train on the stories without the separator lines, which are special tokens and must not be merged into BPE.
    stories = (story for text in iter_training_texts(data) for story in text.split(EOS_TOKEN))
    tokenizer.train_from_iterator(stories, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
                                   pad_token=PAD_TOKEN, clean_up_tokenization_spaces=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="TinyStories text file or folder (default: $LLAMA3_TINYSTORIES, "
                        "a slice of the hub, or the shipped excerpt)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--out", required=True, help="folder to save the tokenizer into")
    args = parser.parse_args(argv)
    tokenizer = train_tokenizer(args.data, args.vocab_size)
    tokenizer.save_pretrained(args.out)
    sample = "Once upon a time, there was a little girl named Lily."
    print(f"{len(tokenizer)} tokens saved to {args.out}; {sample!r} -> {len(tokenizer(sample)['input_ids'])} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
