"""Minify Python source for a packed record file: the same program in fewer bytes.

    from lila_golf.tools.minify import minify
    small = minify(source)

An AST round trip drops comments and docstrings; inside each function, local variables get short
names. What is never renamed: parameters (callers may pass them by keyword), globals, attributes,
class-level names (dataclass fields are what `Hyperparameters.from_env` reads from the environment),
names bound by imports or declared global/nonlocal, names a nested scope also binds, and every name
of a function that calls locals()/vars()/eval()/exec().
"""
from __future__ import annotations

import ast
import builtins
import itertools
import keyword
import string

SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
          ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
DYNAMIC_SCOPE_CALLS = {"locals", "vars", "eval", "exec"}


def drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]


def own_scope_nodes(fn: ast.AST):
    """Nodes of fn's own scope: its body, not the bodies of nested functions, classes, comprehensions."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, SCOPES):
            stack.extend(ast.iter_child_nodes(n))


def scope_bindings(nodes) -> set[str]:
    """Names a scope binds (assignment targets, loop variables, except/with names, imports...)."""
    names = set()
    for n in nodes:
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
    return names


def renamable_locals(fn: ast.FunctionDef) -> list[str]:
    """Locals of fn that can take a new name everywhere in fn's subtree, in order of first use."""
    subtree = list(ast.walk(fn))
    if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in DYNAMIC_SCOPE_CALLS for n in subtree):
        return []
    own = [n for n in own_scope_nodes(fn)]
    blocked = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
    for n in subtree:
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            blocked.update(n.names)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            blocked.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            blocked.add(n.name)
        if isinstance(n, SCOPES) and n is not fn:  # a nested scope that binds the name shadows it
            blocked |= scope_bindings(own_scope_nodes(n))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                blocked |= {a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    stores = [n.id for n in own if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))]
    stores += [n.name for n in own if isinstance(n, ast.ExceptHandler) and n.name]
    return [name for name in dict.fromkeys(stores) if name not in blocked]


def short_names(taken: set[str]):
    for size in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=size):
            name = "".join(letters)
            if name not in taken:
                yield name


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        if node.name:
            node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node


def rename_locals(tree: ast.Module) -> None:
    taken = set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist) | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} \
        | {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)} \
        | {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    # outermost functions only (module-level and methods); nested ones are part of their subtree
    outer, stack = [], [tree]
    while stack:
        n = stack.pop()
        for child in ast.iter_child_nodes(n):
            (outer if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else stack).append(child)
    for fn in outer:
        names = renamable_locals(fn)
        mapping = dict(zip(names, short_names(taken)))
        _Renamer(mapping).visit(fn)


def minify(source: str) -> str:
    tree = ast.parse(source)
    drop_docstrings(tree)
    rename_locals(tree)
    return "from __future__ import annotations\n" + ast.unparse(tree).replace("from __future__ import annotations\n", "", 1) + "\n"
