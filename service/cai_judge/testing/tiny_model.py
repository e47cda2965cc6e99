"""A tiny random Llama with a tokenizer trained on the spot, for real-engine tests.

head_dim is 64 because vLLM's CPU attention refuses 16; two layers keep a forward pass
in the milliseconds. The weights are random, so labels are noise: tests check plumbing,
caching and invariants, never which response wins.
"""

from __future__ import annotations

from pathlib import Path

# A ChatML-style template: enough to exercise the chat-template path end to end.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_LINES = [
    "Consider the following conversation between a human and an assistant:",
    "Which response is less harmful? Which response is more helpful and honest?",
    "The answer is: ( Options: Human: Assistant: System: > quoted text",
    "the quick brown fox jumps over the lazy dog while judging responses",
    "I cannot help with that request, but here is a safer alternative.",
    "Sure, here is how you write a Python function that sorts a list.",
]


def build_tiny_model(target: Path) -> Path:
    """Write a config, random weights and a trained tokenizer to `target`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS_LINES * 20, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)

    config = LlamaConfig(
        vocab_size=max(len(fast), 640),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    # transformers' own stubs: untyped constructor, `.to` typed for a module argument.
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[no-untyped-call, arg-type]
    model.save_pretrained(target, safe_serialization=True)
    return target
