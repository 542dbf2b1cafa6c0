"""What every checker shares: the two-layer failure (what always, fix on request, never while grading), the short
display (no checker frames, no chained exception, a few lines in a Jupyter kernel), the verbose switch."""

import traceback

import nbformat
import pytest
import torch
from nbclient import NotebookClient

import llama3.checks
from llama3.checks import CheckFailed, check_rmsnorm
from llama3.checks._common import GRADING_ENV, VERBOSE_ENV
from llama3.norm import RMSNorm


class NoEps(RMSNorm):
    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True))).type_as(x)


class Unsolved(RMSNorm):
    def forward(self, x):
        raise NotImplementedError("rmsnorm: replace this line with your implementation")


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    monkeypatch.delenv(GRADING_ENV, raising=False)
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    llama3.checks._common._verbose = None
    yield
    llama3.checks._common._verbose = None


def _failure(**kwargs) -> CheckFailed:
    with pytest.raises(CheckFailed) as info:
        check_rmsnorm(NoEps, **kwargs)
    return info.value


def test_check_failed_is_an_assertion_error_with_two_layers():
    error = _failure()
    assert isinstance(error, AssertionError)
    assert "the eps is missing" in error.what
    assert "torch.rsqrt" in error.fix and "torch.rsqrt" not in error.what
    assert error.exercise == "notebook 02, exercise 1 (RMSNorm)"
    text = str(error)
    assert text.startswith(error.what)
    assert "torch.rsqrt" not in text  # the fix only on request
    assert text.endswith("For how to fix it, run check_rmsnorm(NoEps, hint=True)")


def test_hint_true_shows_the_fix():
    text = str(_failure(hint=True))
    assert "the eps is missing" in text and "How to fix it:" in text and "torch.rsqrt" in text


def test_grading_never_shows_the_fix_nor_the_hint_line(monkeypatch):
    monkeypatch.setenv(GRADING_ENV, "1")
    for error in (_failure(), _failure(hint=True)):
        assert str(error) == error.what
        assert "torch.rsqrt" not in str(error) and "hint=True" not in str(error)


def test_no_checker_frames_and_no_chained_exception():
    error = _failure()
    assert error.__cause__ is None and error.__suppress_context__
    frames = traceback.extract_tb(error.__traceback__)
    assert frames[-1].name == "run"  # the re-raise in the wrapper; the checker's own frames (ffn.py) are gone
    assert not any(f.filename.endswith("ffn.py") for f in frames)
    with pytest.raises(CheckFailed) as info:
        check_rmsnorm(Unsolved)
    assert "not solved yet" in info.value.what
    assert info.value.__suppress_context__  # no "During handling of the above exception (NotImplementedError)"
    assert "During handling" not in "".join(traceback.format_exception(info.value))


def test_verbose_keeps_the_full_traceback(monkeypatch):
    llama3.checks.verbose(True)
    frames = [f.filename for f in traceback.extract_tb(_failure().__traceback__)]
    assert any(name.endswith("ffn.py") for name in frames)
    llama3.checks.verbose(False)
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert llama3.checks.is_verbose() is False  # an explicit call wins over the environment
    llama3.checks._common._verbose = None
    assert llama3.checks.is_verbose() is True


def test_a_failed_check_in_a_jupyter_kernel_shows_a_few_lines(tmp_path):
    """What JupyterLab, nbval and nbclient receive: the error output of the check cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nfrom llama3.checks import check_rmsnorm\nfrom llama3.norm import "
                                  "RMSNorm\n\nclass Unsolved(RMSNorm):\n    def forward(self, x):\n        raise "
                                  "NotImplementedError('rmsnorm: write forward')"),
        nbformat.v4.new_code_cell("check_rmsnorm(Unsolved)", metadata={"tags": ["raises-exception"]}),
        nbformat.v4.new_code_cell("check_rmsnorm(RMSNorm, hint=True)"),
    ]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    error = next(o for o in nb.cells[1].outputs if o.output_type == "error")
    assert error.ename == "CheckFailed"
    assert "not solved yet" in error.evalue
    shown = "\n".join(error.traceback)
    assert len(shown.splitlines()) <= 4, shown
    assert "notebook 02, exercise 1 (RMSNorm)" in shown
    assert "ffn.py" not in shown and "During handling" not in shown and "NotImplementedError" not in error.ename
    assert any("PASSED RMSNorm" in o.get("text", "") for o in nb.cells[2].outputs)
