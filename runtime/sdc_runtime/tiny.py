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
from typing import Any

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

# Gemma 2's template as google/gemma-2-9b-it ships it: no system turn, and turns must alternate
# user/assistant. The guide's default model; a tiny model with it shows what clients must adapt to.
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def make_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    max_positions: int = 512,
    chat_template: str = CHAT_TEMPLATE,
    ends_early: bool = False,
    weight_scale: float = 1.0,
    heads: int = 4,
    kv_heads: int = 2,
) -> Path:
    """Write a random-weight causal LM and its tokenizer to ``out_dir`` and return it.

    `max_positions` is the context length the model reports; `chat_template` the Jinja template its
    tokenizer ships (GEMMA2_CHAT_TEMPLATE: one that refuses a system turn, like Gemma 2's).
    `ends_early`: answers end after a few dozen tokens (`_end_early`), not at max_tokens.
    `weight_scale` multiplies every weight but the norms': at the default the untrained model's
    greedy answer is one token repeated whatever the prompt; at 8 its output depends on every token
    and position, which tests that compare outputs need in order to notice a wrong cache.
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
    tokenizer.chat_template = chat_template
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
    if weight_scale != 1.0:
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if "norm" not in name:
                    weight.mul_(weight_scale)
    if ends_early:  # after the scaling: it sets the weights that end answers
        _end_early(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "sdc-tiny-model.json").write_text(json.dumps({"random_weights": True, "seed": seed}))
    return out_dir


def _end_early(model: Any, tokenizer: Any, margin: float = 0.12) -> None:
    """Make the end-of-sequence token likely once the answer has visible text, so answers are short.

    A random model rarely samples its EOS token: with a long context every answer runs to max_tokens,
    minutes of CPU in a test. One hidden dimension is made a constant carried untouched through the
    layers (no layer writes to it): `c` in the embedding of every token that decodes on its own to
    visible text, 0 in the others (the newline that ends the templates' prompts, byte fragments,
    control tokens), `c + margin` in EOS's. Tied to the output, that dimension adds the same logit
    to every visible token and a bit more to EOS, but only after a visible token: an answer is never
    empty, and after its first visible token about one step in thirty ends it.
    """
    import torch

    embed = model.get_input_embeddings().weight
    k, c = embed.shape[1] - 1, 1.0
    specials = set(tokenizer.all_special_ids)
    with torch.no_grad():
        for token_id in range(embed.shape[0]):
            text = tokenizer.decode([token_id])
            visible = token_id not in specials and text.strip() != "" and "\ufffd" not in text
            embed[token_id, k] = c if visible else 0.0
        embed[tokenizer.eos_token_id, k] = c + margin
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[k, :] = 0.0
            layer.mlp.down_proj.weight[k, :] = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random-weight chat model (its output is noise).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4, help="attention heads (head_dim = hidden-size / heads)")
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-positions", type=int, default=512, help="the model's context length")
    parser.add_argument("--gemma2-template", action="store_true", help="Gemma 2's chat template (no system turn)")
    args = parser.parse_args()
    model = make_tiny_model(
        args.out_dir,
        seed=args.seed,
        hidden_size=args.hidden_size,
        heads=args.heads,
        kv_heads=args.kv_heads,
        layers=args.layers,
        max_positions=args.max_positions,
        chat_template=GEMMA2_CHAT_TEMPLATE if args.gemma2_template else CHAT_TEMPLATE,
    )
    print(model)
