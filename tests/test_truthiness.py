"""Objects that define ``__len__`` are falsy when empty: ``x or Default()`` then replaces a
perfectly good empty one (an ``OutcomeScorer`` with no model yet, whose refresh would
have picked up the first model). Parsed from the source, never executed.

Two rules over ``src/``: a default of such a class is chosen with ``is None``, never
``or``; and a parameter typed with a class whose truth comes only from ``__len__`` is not
tested for truth (``if x``, ``not x``), since "empty" and "absent" differ. Classes that
define ``__bool__`` on purpose (``Ruleset``, ``Changes``) may be tested for truth.
"""

from __future__ import annotations

import ast
from pathlib import Path

import opportune

ROOT = Path(opportune.__file__).parent
CONTAINERS = {"list", "dict", "set", "frozenset", "tuple", "Mapping", "MutableMapping",
              "Sequence", "MutableSequence", "Set", "MutableSet", "Counter", "OrderedDict",
              "defaultdict", "deque", "UserDict", "UserList"}  # fmt: skip


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text("utf-8"))) for p in sorted(ROOT.rglob("*.py"))]


def _base_name(node: ast.expr) -> str:
    while isinstance(node, ast.Subscript):
        node = node.value
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _sized_classes(trees: list[tuple[Path, ast.Module]]) -> tuple[set[str], set[str]]:
    """(classes with a length, those of them whose truth is their length only)."""
    sized, own_bool = set(), set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
            if "__len__" in methods or {_base_name(b) for b in node.bases} & CONTAINERS:
                sized.add(node.name)
            if "__bool__" in methods:
                own_bool.add(node.name)
    return sized, sized - own_bool


def _called(node: ast.expr) -> str:
    """The class whose instance a default makes: ``C()``, ``C.load()``; else ``""`` (a
    class itself, e.g. a factory, is always true)."""
    if not isinstance(node, ast.Call):
        return ""
    node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id if node.value.id[:1].isupper() else node.attr
    return _base_name(node)


def _annotated(fn: ast.FunctionDef | ast.AsyncFunctionDef, classes: set[str]) -> set[str]:
    """The parameters of ``fn`` whose annotation names one of ``classes``."""
    out = set()
    a = fn.args
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
        if arg.annotation is None:
            continue
        names = {n.id for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)}
        names |= {
            n.value
            for n in ast.walk(arg.annotation)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        if any(c in classes for s in names for c in s.replace("|", " ").split()):
            out.add(arg.arg)
    return out


def _truth_tests(fn: ast.AST) -> list[ast.expr]:
    """Expressions ``fn`` takes the truth of: conditions, ``not x``, operands of and/or."""
    out: list[ast.expr] = []
    for node in ast.walk(fn):
        if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
            out.append(node.test)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append(node.operand)
        elif isinstance(node, ast.BoolOp):
            out.extend(node.values[:-1])
        elif isinstance(node, ast.comprehension):
            out.extend(node.ifs)
    return out


def test_no_default_of_a_sized_class_is_chosen_with_or() -> None:
    trees = _trees()
    sized, _ = _sized_classes(trees)
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for path, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.BoolOp)
        and isinstance(node.op, ast.Or)
        and any(_called(v) in sized for v in node.values[1:])
    ]
    assert not found, "use `x if x is not None else Default()`:\n" + "\n".join(found)


def test_no_parameter_of_a_length_only_class_is_tested_for_truth() -> None:
    trees = _trees()
    _, length_only = _sized_classes(trees)
    found = []
    for path, tree in trees:
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = _annotated(fn, length_only)
            for test in _truth_tests(fn):
                if isinstance(test, ast.Name) and test.id in params:
                    found.append(f"{path.relative_to(ROOT)}:{test.lineno}: {ast.unparse(test)}")
    assert not found, "compare with None, or use len():\n" + "\n".join(found)


def test_the_rules_see_the_bug_they_are_for() -> None:
    """Both checks find the bug they exist for, in a sample written like the original."""
    sample = ast.parse(
        "class OutcomeScorer:\n    def __len__(self): return 0\n"
        "def f(scorer: OutcomeScorer | None = None):\n"
        "    s = scorer or OutcomeScorer()\n    if not scorer: pass\n"
    )
    sized, length_only = _sized_classes([(ROOT, sample)])
    assert sized == length_only == {"OutcomeScorer"}
    [boolop] = [n for n in ast.walk(sample) if isinstance(n, ast.BoolOp)]
    assert _called(boolop.values[1]) == "OutcomeScorer"
    [fn] = [n for n in ast.walk(sample) if isinstance(n, ast.FunctionDef) and n.name == "f"]
    assert _annotated(fn, length_only) == {"scorer"}
    tested = [t.id for t in _truth_tests(fn) if isinstance(t, ast.Name)]
    assert tested == ["scorer", "scorer"]  # the `or` operand, then `not scorer`
