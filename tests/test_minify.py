"""The minifier keeps the program: same behaviour, shorter locals, parameters and fields untouched."""
import ast

from lila_golf.tools.minify import minify

SOURCE = '''
"""module docstring"""
import math
from dataclasses import dataclass


@dataclass
class Config:
    """fields are read by name: never renamed"""
    hidden_width: int = 3


def total_energy(values, scale=2.0):
    """docstring"""
    running_total = 0.0  # a comment
    for index, value in enumerate(values):
        running_total += scale * value * index
    squares = [element * element for element in values]
    def add_offset(offset_amount):
        return running_total + offset_amount
    try:
        ratio = running_total / sum(squares)
    except ZeroDivisionError as problem:
        ratio = -1.0
    as_ = Config(hidden_width=len(values)).hidden_width
    return add_offset(math.sqrt(abs(ratio))) + as_


def uses_locals():
    keep_this_name = 1
    return locals()
'''


def run(source):
    namespace = {}
    exec(compile(source, "m", "exec"), namespace)
    return namespace


def test_minified_program_behaves_the_same():
    small = minify(SOURCE)
    assert len(small) < len(SOURCE)
    for values in ([1.0, 2.0, 3.0], [0.0], []):
        assert run(small)["total_energy"](values, scale=3.0) == run(SOURCE)["total_energy"](values, scale=3.0)
    assert run(small)["uses_locals"]() == {"keep_this_name": 1}


def test_locals_renamed_but_parameters_fields_and_docstrings_handled():
    small = minify(SOURCE)
    names = {n.id for n in ast.walk(ast.parse(small)) if isinstance(n, ast.Name)}
    assert "running_total" not in names and "squares" not in names
    assert "docstring" not in small and "a comment" not in small
    assert "def total_energy(values, scale=2.0)" in small
    assert "hidden_width: int = 3" in small and "Config(hidden_width=" in small
    assert "keep_this_name" in small
