"""QLoRA gradients through the 4-bit base are right, even after an eval-mode forward.

On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights on the first eval-mode no-grad forward;
training through repacked layers silently drops the gradient flowing through the frozen base. The guard
(``disable_cpu_4bit_repacking``, applied by training) prevents it. These tests compare LoRA gradients
through the NF4 model with those of the same model holding the dequantized weights in plain fp32 layers.
"""

import pytest
import torch

from assistant.models.loading import disable_cpu_4bit_repacking, load_base, repacked_4bit_layers
from assistant.training.config import ALL_LINEAR


def nf4_and_reference(tiny_model_dir):
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = load_base(str(tiny_model_dir), quantization="nf4", device="cpu").model
    disable_cpu_4bit_repacking(model)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    modules = dict(reference.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = module.weight
            modules[name].weight.data = dequantize_4bit(w.data, w.quant_state).to(torch.float32)
    # init_lora_weights=False: B is random too, so gradients reach both A and B (and flow through the base).
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=ALL_LINEAR, init_lora_weights=False)
    torch.manual_seed(0)
    nf4 = get_peft_model(model, config)
    ref = get_peft_model(reference, config)
    lora = {k: v for k, v in nf4.state_dict().items() if "lora_" in k}
    missing = ref.load_state_dict(lora, strict=False)
    assert not missing.unexpected_keys
    return nf4, ref


def lora_gradients(model, batch):
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("batch_size", [1, 4])
def test_lora_gradients_through_nf4_match_dequantized_weights_after_eval_forward(tiny_model_dir, batch_size):
    nf4, ref = nf4_and_reference(tiny_model_dir)
    torch.manual_seed(batch_size)
    ids = torch.randint(3, 300, (batch_size, 24))
    batch = {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}

    nf4.eval()  # what generation or a validation pass does first
    with torch.no_grad():
        nf4(input_ids=ids)
    assert repacked_4bit_layers(nf4) == []

    got, expected = lora_gradients(nf4, batch), lora_gradients(ref, batch)
    assert got.keys() == expected.keys() and len(got) == 2 * 2 * 7  # A and B, 2 layers, 7 projections
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-3, atol=1e-6), name
    # The layers that only see gradient flowing back through the frozen base are the ones the bug zeroed.
    for projection in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        norm = sum(g.norm() for n, g in got.items() if f"layers.0.self_attn.{projection}" in n or f"layers.0.mlp.{projection}" in n)
        assert norm > 1e-4, projection


def test_guard_turns_off_repacking_on_an_avx512_bf16_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    model = load_base(str(tiny_model_dir), quantization="nf4", device="cpu").model
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:  # what bitsandbytes sets on a CPU with AVX512-BF16
        layer.support_avx512bf16_for_cpu = True
    assert disable_cpu_4bit_repacking(model) == len(layers)
    assert not any(layer.support_avx512bf16_for_cpu for layer in layers)
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.randint(3, 300, (1, 8)))
    assert repacked_4bit_layers(model) == []


def test_training_fails_loudly_if_a_layer_is_repacked(tiny_model_dir):
    import bitsandbytes as bnb

    from assistant.training.sft import RepackGuard

    model = load_base(str(tiny_model_dir), quantization="nf4", device="cpu").model
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    layer.weight.quant_state.packing_format_for_cpu = True  # as if repacked behind the guard's back
    with pytest.raises(RuntimeError, match="repacked for CPU inference"):
        RepackGuard().on_step_begin(None, None, None, model=model)
