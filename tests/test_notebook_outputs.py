"""The outputs nbval compares in solutions/ are the same on every CPU: no float tensor reprs, no long floats.

`pytest --nbval solutions/` compares each cell's fresh text output with the stored one, character for character. A
float32 value can differ in its last bits between CPUs (an Intel Xeon gave 0.99999994 where an AMD EPYC gave exactly
1.0, so `tensor([1., 1., 1.])` became `tensor([1.0000, 1.0000, 1.0000])`), between thread counts and between torch's
kernel variants; and running the variants on one machine does not reproduce every such drift. So this test reads the
stored outputs (cheap: JSON only) and refuses what would print those last bits (docs/notebook_conventions.md, rule 7):

- a float tensor or array repr (`tensor([0.1038, ...])`, `tensor([1., 1.])`): print rounded numbers or a boolean;
- a number with more than MAX_SIGNIFICANT_DIGITS significant digits (`1.118034`, `10.8249`).

Four digits: a float32 carries about 7 significant digits and a change of kernel or summation order moves a result by
a few units in its last place (relative 1e-7 to 1e-6 after a reduction over thousands of terms). A value printed
with at most 4 significant digits changes only when it lies within that distance of a rounding boundary, which has a
chance of about 1e-6 / 1e-4 = 1% for a 4-digit value, 0.1% for 3 digits, and none for a boolean or an integer count.
Trailing zeros are not counted (`500000.0`, `1.00e-04`): they come from exact values and formatting.
Integers (`6,630,208 parameters`) are counts and are not checked: compute them exactly.
"""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
MAX_SIGNIFICANT_DIGITS = 4
IGNORED_TAGS = {"nbval-ignore-output", "nbval-skip"}

# a decimal number not part of a longer dotted token (a version such as 2.13.0 is not a number)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d[\d,]*\.\d*|\.\d+|\d+(?=[eE][-+]?\d))(?:[eE][-+]?\d+)?(?![\w.]*\d)")
FLOAT_IN_REPR = re.compile(r"\d\.|\.\d|\d[eE][-+]?\d|\bnan\b|\binf\b")
REPR_START = re.compile(r"\b(tensor|array|Parameter containing:\s*tensor)\(")


def significant_digits(number: str) -> int:
    """'0.004560' -> 3, '10.8249' -> 6, '1.00e-04' -> 1, '500000.0' -> 1, '-0.0' -> 0."""
    mantissa = re.split(r"[eE]", number.lstrip("+-"))[0].replace(",", "").replace(".", "")
    return len(mantissa.lstrip("0").rstrip("0"))


def float_reprs(text: str) -> list[str]:
    """The tensor(...) / array(...) reprs in ``text`` that hold a float."""
    found = []
    for match in REPR_START.finditer(text):
        depth, end = 0, len(text)
        for i in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        body = re.sub(r"(dtype|device|grad_fn|requires_grad)=[^,)]*", "", text[match.end(): end])
        if FLOAT_IN_REPR.search(body):
            found.append(text[match.start(): end])
    return found


def long_numbers(text: str) -> list[str]:
    """The numbers in ``text`` with more than MAX_SIGNIFICANT_DIGITS significant digits."""
    return [m.group() for m in NUMBER.finditer(text) if significant_digits(m.group()) > MAX_SIGNIFICANT_DIGITS]


def compared_outputs(path: Path):
    """(cell index, text) of every output nbval compares: code cells not tagged to be ignored, errors left out."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code" or IGNORED_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                yield index, "".join(output["text"])
            elif output["output_type"] in ("execute_result", "display_data"):
                yield index, "".join(output.get("data", {}).get("text/plain", ""))


def problems(path: Path) -> list[str]:
    found = []
    for index, text in compared_outputs(path):
        for shown in float_reprs(text):
            found.append(f"cell {index}: a float tensor/array repr {shown[:60]!r}: print rounded values or a boolean")
        for number in long_numbers(text):
            found.append(f"cell {index}: {number!r} has more than {MAX_SIGNIFICANT_DIGITS} significant digits")
    return found


@pytest.mark.parametrize("text", ["tensor([1., 1., 1.])", "tensor([1.0000, 1.0000, 1.0000])",
                                  "RMS: tensor([ 0.1038,  2.4096, 13.1351])", "tensor(nan)",
                                  "array([0.5, 2. ])", "tensor([1, 2], dtype=torch.float32) + tensor(1.5e-07)",
                                  "Parameter containing:\ntensor([[0.1, 0.2]], requires_grad=True)"])
def test_float_reprs_are_found(text):
    assert float_reprs(text)


@pytest.mark.parametrize("text", ["tensor([[1, 0],\n        [1, 1]], dtype=torch.int32)", "tensor(True)",
                                  "tensor([3, 5]) (2, 10, 64)", "no tensor here: 0.42"])
def test_integer_and_bool_reprs_pass(text):
    assert not float_reprs(text)


@pytest.mark.parametrize("text, expected", [
    ("length 1.118034 / 1.118034", ["1.118034", "1.118034"]),
    ("loss = 10.8249, log V = 10.82", ["10.8249"]),
    ("score +1.149545", ["+1.149545"]),
    ("p 0.00012345", ["0.00012345"]),
    ("x 3.14159e-05", ["3.14159e-05"]),
    ("lr 5.00e-04, eps 1e-05, theta=500000.0, 1008.0 GiB, 0.0e+00, 6,630,208 parameters, 0.422, 6.005", []),
    ("torch 2.13.0, python 3.11.7, Llama 3.1 405B", []),
])
def test_long_numbers_are_found(text, expected):
    assert long_numbers(text) == expected


@pytest.mark.skipif(not SOLUTIONS, reason="solutions/ holds no notebook yet")
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_compared_outputs_do_not_depend_on_the_cpu(path):
    found = problems(path)
    assert not found, (f"{path.name}: outputs nbval compares would print the last bits of a float, which differ "
                       f"between CPUs (docs/notebook_conventions.md, rule 7):\n  " + "\n  ".join(found))
