"""The ``--first-where`` expression: a small, safe subset of Python,
parsed with :mod:`ast` and evaluated by walking the tree, never with
:func:`eval`."""

from __future__ import annotations

import ast
import operator
from typing import (
    Any,
    Callable,
    Dict,
    Mapping,
    Tuple,
)

from napixclient.cli.arguments import UsageError

#: The longest ``--first-where`` expression accepted, in characters.
MAX_EXPRESSION = 1000


class ExpressionError(UsageError):
    """A ``--first-where`` expression that is not valid or uses something
    outside the allowed subset."""


_NAMES = ("status", "body", "host")


_COMPARE: Dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


_ALLOWED = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not,
    ast.USub, ast.Subscript, ast.Constant, ast.Name, ast.Load, ast.Tuple, ast.List,
    *_COMPARE,
)


# What is refused, in words a user knows: the first class that matches.
_REFUSED: Tuple[Tuple[Any, str], ...] = (
    (ast.BinOp, "arithmetic is not allowed"),
    ((ast.UAdd, ast.Invert), "unary + and ~ are not allowed"),
    (ast.Call, "calling functions is not allowed"),
    (ast.Attribute, "attributes (x.y) are not allowed"),
    (ast.Slice, "slices (x[1:2]) are not allowed"),
    ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
     "comprehensions are not allowed"),
    (ast.Lambda, "lambda is not allowed"),
    (ast.IfExp, "conditional expressions (a if b else c) are not allowed"),
    ((ast.Dict, ast.Set), "dicts and sets are not allowed"),
    (ast.NamedExpr, "assignments (:=) are not allowed"),
    ((ast.JoinedStr, ast.FormattedValue), "f-strings are not allowed"),
    (ast.Starred, "unpacking (*x) is not allowed"),
)


def compile_condition(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile a ``--first-where`` expression into a predicate.

    The expression is parsed with :mod:`ast` and evaluated by walking the
    tree, never with :func:`eval`. Allowed: comparisons (``== != < <= > >=
    in not in is is not``), ``and``/``or``/``not``, unary minus, subscripts
    (``body['free_slots']``), constants, tuples and lists, and the names
    ``status``, ``body`` and ``host``. Calls, attributes, other names and
    operators are refused.

    :param text: e.g. ``"status == 200 and body['free_slots'] > 0"``.
    :returns: ``predicate(values)``, where ``values`` maps the names to
        their values; it returns ``bool`` and never raises: an expression
        that fails on a value (a missing key, comparing ``None`` with an
        ``int``) is false for that value.
    :raises ExpressionError: at once, for an empty expression, a syntax
        error, a disallowed construct (named in words: "arithmetic is not
        allowed") or name, or an expression longer than
        :data:`~napixclient.cli.expressions.MAX_EXPRESSION` characters.
    """
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"--first-where: longer than {MAX_EXPRESSION} characters")
    if not text.strip():
        raise ExpressionError("--first-where needs an expression, such as "
                              "\"status == 200 and body['free_slots'] > 0\"")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"--first-where {text!r}: {error.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            what = next((words for kinds, words in _REFUSED if isinstance(node, kinds)),
                        "this construct is not allowed")
            raise ExpressionError(
                f"--first-where {text!r}: {what}; use comparisons (== != < <= > >= in is), "
                "and/or/not, subscripts (body['key']), constants and the names "
                + ", ".join(_NAMES))
        if isinstance(node, ast.Name) and node.id not in _NAMES:
            raise ExpressionError(f"--first-where {text!r}: unknown name {node.id!r}; "
                                  "the names are " + ", ".join(_NAMES))

    def predicate(values: Mapping[str, Any]) -> bool:
        try:
            return bool(_evaluate(tree.body, values))
        except Exception:  # a failing comparison or lookup is a non-match
            return False

    return predicate


def _evaluate(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_evaluate(item, values) for item in node.elts)
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, values)[_evaluate(node.slice, values)]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BoolOp):
        result: Any = None
        for item in node.values:
            result = _evaluate(item, values)
            # Python's own short-circuit: and stops at a false value, or at a true one.
            if isinstance(node.op, ast.And) != bool(result):
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ExpressionError(f"{type(node).__name__} is not allowed")  # checked at compile

