"""Canary for the transformers internals the local backend relies on.

The continuous batch (``backends.decoding``) and choice scoring (``backends.local``) reach
into transformers' KV cache: ``DynamicCache.layers`` of ``DynamicLayer`` with ``keys`` and
``values`` shaped (batch, heads, positions, dim), ``batch_select_indices``,
``batch_repeat_interleave``, and a forward that takes the cache (``cache`` in transformers 5,
``past_key_values`` before) and ``logits_to_keep``. None of that is public API, so
``pyproject.toml`` bounds transformers above at the newest release this file passes with;
when an upgrade breaks one of them, the failure names it here.
"""

from __future__ import annotations

import pytest

from .tiny_lm import save_tiny_chat_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = save_tiny_chat_model(tmp_path_factory.mktemp("canary"))
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def _forward(model, ids, cache=None, **extra):
    from domainkit.backends.local import cache_argument

    argument = cache_argument(model)
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=True, **extra, **{argument: cache})


def test_the_cache_is_layers_of_dynamic_keys_and_values(model):
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    ids = torch.randint(3, 300, (2, 5))
    out = _forward(model, ids, DynamicCache(), logits_to_keep=1)
    cache = getattr(out, "cache", None) or out.past_key_values
    assert out.logits.shape[1] == 1, "logits_to_keep keeps the last position only"
    assert len(cache.layers) == model.config.num_hidden_layers
    for layer in cache.layers:
        assert type(layer) is DynamicLayer
        heads = model.config.num_key_value_heads
        dim = model.config.hidden_size // model.config.num_attention_heads
        assert layer.keys.shape == layer.values.shape == (2, heads, 5, dim)


def test_rows_selected_or_repeated_in_the_cache_decode_as_they_would_alone(model):
    """What ``_drop_finished`` (select rows), ``_merge`` (concatenate layers) and choice
    scoring (repeat a prompt's cache) do must leave each row's next logits unchanged."""
    from transformers import DynamicCache

    ids = torch.randint(3, 300, (3, 6))
    nxt = torch.randint(3, 300, (3, 1))
    whole = _forward(model, torch.cat([ids, nxt], 1)).logits[:, -1]

    cache = _forward(model, ids, DynamicCache()).past_key_values
    cache.batch_select_indices(torch.tensor([0, 2]))
    kept = _forward(model, nxt[[0, 2]], cache).logits[:, -1]
    assert torch.allclose(kept, whole[[0, 2]], atol=1e-5)

    single = _forward(model, ids[:1], DynamicCache()).past_key_values
    single.batch_repeat_interleave(2)
    repeated = _forward(model, nxt[[0, 0]], single).logits[:, -1]
    assert torch.allclose(repeated, whole[[0, 0]], atol=1e-5)

    first = _forward(model, ids[:1], DynamicCache()).past_key_values
    second = _forward(model, ids[1:2], DynamicCache()).past_key_values
    for mine, theirs in zip(first.layers, second.layers, strict=True):
        mine.keys = torch.cat([mine.keys, theirs.keys])
        mine.values = torch.cat([mine.values, theirs.values])
    merged = _forward(model, nxt[:2], first).logits[:, -1]
    assert torch.allclose(merged, whole[:2], atol=1e-5)
