"""Exercise checkers: ``check_<component>(LearnerClassOrFunction)``.

Each checker loads known weights into the learner's object, compares it with the reference implementation in
``llama3`` on random and targeted inputs, and raises ``AssertionError`` whose message names the likely mistake.
On success it prints one short line. The notebooks call them after each exercise; ``python -m llama3.grade``
calls them for instructors.
"""

import importlib

# checker name -> module in this package that defines it
_CHECKERS = {
    "check_rope": "rope",
    "check_apply_rotary": "rope",
    "check_rmsnorm": "ffn",
    "check_ffn": "ffn",
    "check_kv_cache": "kv_cache",
    "check_attention": "attention",
    "check_decoder_layer": "decoder",
    "check_llama3": "model",
    "check_loss": "model",
    "check_lr_schedule": "training",
    "check_train_step": "training",
    "check_top_p": "generation",
    "check_sample_next_token": "generation",
    "check_generate_kv": "generation",
}

__all__ = sorted(_CHECKERS)


def __getattr__(name):
    if name in _CHECKERS:
        module = importlib.import_module(f"llama3.checks.{_CHECKERS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'llama3.checks' has no attribute {name!r}")
