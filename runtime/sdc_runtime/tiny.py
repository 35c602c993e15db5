"""Make a tiny random-weight chat model on the spot.

No model hub is reachable from tests or CI, and a real model is gigabytes.
A two-layer Llama with a byte-level BPE tokenizer trained on a few Korean and
English sentences is a few hundred KB, builds in well under a second, and goes
through exactly the same code paths as a real model (chat template, safetensors,
generation, embeddings). Its output is noise: it has never been trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CORPUS = [
    "안녕하세요. 무엇을 도와드릴까요?",
    "서울은 대한민국의 수도입니다. 부산은 항구 도시입니다.",
    "문서를 검색해서 한국어로 답변합니다. 제공된 문맥에 답이 없으면 모른다고 말합니다.",
    "Hello, how can I help you today? The answer is in the context.",
    "쿠버네티스에서 GPU 노드를 사용해 언어 모델을 서비스합니다.",
]

# A ChatML-style template: the same shape many real instruct models ship.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    max_positions: int = 512,
    heads: int = 4,
    kv_heads: int = 2,
) -> Path:
    """Write a random-weight causal LM and its tokenizer to ``out_dir`` and return it.

    The head dimension is hidden_size / heads: vLLM's CPU attention kernels need at
    least 32 (hidden_size=256, heads=8), the default 16 is fine for Transformers.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=max_positions,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "sdc-tiny-model.json").write_text(json.dumps({"random_weights": True, "seed": seed}))
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-weight chat model (its output is noise).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4, help="attention heads (head_dim = hidden-size / heads)")
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-positions", type=int, default=512)
    args = parser.parse_args()
    model = make_tiny_model(
        args.out_dir,
        seed=args.seed,
        hidden_size=args.hidden_size,
        heads=args.heads,
        kv_heads=args.kv_heads,
        layers=args.layers,
        max_positions=args.max_positions,
    )
    print(model)
