"""Exercise checkers: ``check_<component>(LearnerClassOrFunction)``.

Each checker first re-checks the learner's earlier pieces the exercise uses (and says which exercise to fix first),
then loads known weights into the learner's object, compares it with the reference implementation in ``llama3`` on
random and targeted inputs, and raises ``CheckFailed`` (an ``AssertionError``) whose message names the likely
mistake. ``check_x(obj, hint=True)`` adds the code that fixes it (never shown while grading, ``LLAMA3_GRADING=1``).
On success it prints one short line. The notebooks call them after each exercise; ``python -m llama3.grade`` calls
them for instructors.

Inside IPython/Jupyter a failed check prints a few lines (the exception type, the exercise, the message) instead of
a traceback through the checker's code; ``llama3.checks.verbose(True)`` or ``LLAMA3_CHECKS_VERBOSE=1`` brings the
full traceback back.
"""

import importlib

from llama3.checks._common import CheckFailed, is_verbose, verbose

# checker name -> module in this package that defines it
_CHECKERS = {
    "check_rope": "rope",
    "check_apply_rotary": "rope",
    "check_rmsnorm": "ffn",
    "check_ffn": "ffn",
    "check_kv_cache": "kv_cache",
    "check_attention": "attention",
    "check_attention_mask": "attention",
    "check_attention_by_hand": "attention",
    "check_decoder_layer": "decoder",
    "check_llama3": "model",
    "check_loss": "model",
    "check_lr_schedule": "training",
    "check_train_step": "training",
    "check_top_p": "generation",
    "check_sample_next_token": "generation",
    "check_generate_kv": "generation",
}

__all__ = sorted(_CHECKERS) + ["CheckFailed", "verbose"]


def __getattr__(name):
    if name in _CHECKERS:
        module = importlib.import_module(f"llama3.checks.{_CHECKERS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'llama3.checks' has no attribute {name!r}")


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for CheckFailed: shows the exception type, the exercise and the message, no checker frames
    (as an error output: JupyterLab draws it, nbval and nbclient read its ename and evalue)."""
    if is_verbose():
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    else:
        red, bold, reset = "\x1b[0;31m", "\x1b[1m", "\x1b[0m"
        where = f" in {value.exercise}" if getattr(value, "exercise", "") else ""
        stb = [f"{red}{etype.__name__}{reset}{bold}{where}{reset}", str(value)]
    shell._showtraceback(etype, value, stb)
    return stb


def _install_ipython_handler() -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: the traceback is already short (the checker re-raises from None)
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "set_custom_exc"):
        shell.set_custom_exc((CheckFailed,), _short_traceback)


_install_ipython_handler()
