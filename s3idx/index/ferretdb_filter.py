"""A validated filter, written again in the forms FerretDB v1 answers correctly.

FerretDB v1 answers some operators wrongly where a path goes through an array (of documents,
or of scalars): ``{"e.k": {"$ne": 2}}`` matches ``{"e": [{"k": 1}, {"k": 2}]}``, and so do
``$nin`` and ``$not``; ``{"e.k": {"$all": [1, 2]}}`` matches nothing. It answers ``$nor`` and
plain conditions right. MongoDB defines the equivalences used here:

- ``{p: {$ne: v}}`` is ``{$nor: [{p: v}]}``, ``{p: {$nin: L}}`` is ``{$nor: [{p: {$in: L}}]}``,
  ``{p: {$not: X}}`` is ``{$nor: [{p: X}]}`` and ``{p: {$exists: false}}`` is
  ``{$nor: [{p: {$exists: true}}]}``;
- ``{p: {$all: [a, b]}}`` is ``{$and: [{p: a}, {p: b}]}``;
- an object of several operators is the ``$and`` of one-operator conditions (``$regex`` keeps
  its ``$options``).

``parse_filter`` already turns a filter into exactly that tree (``And``, ``Or``, ``Not`` over
one-predicate ``PathCondition``s), so the tree is written out: every negation as ``$nor``,
every conjunction as ``$and``. ``$type`` keeps only the types an entry can hold (JSON has no
decimal, binData, ...: FerretDB does not know every alias, and refuses minKey and maxKey), so
a ``$type`` naming none of them matches nothing, as on the other backends.

``$elemMatch`` and document operands are refused on FerretDB before this runs (see
``MongoIndex._check_query``).
"""

from __future__ import annotations

from typing import Any

from s3idx.errors import InvalidFilterError
from s3idx.query.filter import (
    And,
    Cmp,
    Eq,
    Exists,
    Expr,
    Filter,
    In,
    Never,
    Not,
    Or,
    PathCondition,
    Predicate,
    Regex,
    Size,
    Type,
)

# The BSON types an entry can hold (JSON values, and datetimes): double, string, object, array,
# bool, date, null, int, long. Any other $type matches nothing in an s3idx index.
ENTRY_TYPES = frozenset({1, 2, 3, 4, 8, 9, 10, 16, 18})
# A condition no value satisfies, in a form FerretDB answers.
_NOTHING: dict[str, Any] = {"$in": []}


def ferretdb_filter(flt: Filter, location: str) -> dict[str, Any]:
    """The filter ``flt`` in forms FerretDB v1 answers as MongoDB does; InvalidFilterError for
    a condition it cannot be made to answer right (see ``null_on_a_dotted_path``)."""
    path = null_on_a_dotted_path(flt)
    if path is not None:
        raise InvalidFilterError(
            f"comparing the dotted path {path!r} with null is refused on FerretDB ({location}): "
            "FerretDB v1 answers it wrongly where the path goes through an array of documents "
            "(an element without the field is missed, an empty array is matched)",
            hint='test {"$exists": false} or {"$type": "null"} instead if that is what is '
            "meant, or keep the index in MongoDB or SQLite",
        )
    return _expr(flt.expr)


def null_on_a_dotted_path(flt: Filter) -> str | None:
    """The first dotted path the filter compares with null (equality, ``$in`` with a null,
    ``$gte``/``$lte`` null, and their negations), else None.

    MongoDB matches ``{"e.k": null}`` on ``{"e": [{"j": 1}]}`` (an element lacks k) but not on
    ``{"e": []}``; FerretDB v1 does the opposite, and no form without ``$elemMatch`` (which it
    also answers wrongly) says the same thing. Only the path's data could tell whether the
    answer would be right, so the filter is refused whatever the data."""
    stack: list[Expr] = [flt.expr]
    while stack:
        expr = stack.pop()
        if isinstance(expr, And | Or):
            stack.extend(expr.children)
        elif isinstance(expr, Not):
            stack.append(expr.child)
        elif "." in expr.path and _tests_null(expr.predicate):
            return expr.path
    return None


def _tests_null(predicate: Predicate) -> bool:
    if isinstance(predicate, Eq | Cmp):
        return predicate.value is None
    return isinstance(predicate, In) and predicate.has_null


def _expr(expr: Expr) -> dict[str, Any]:
    if isinstance(expr, And):
        children = [_expr(child) for child in expr.children]
        if not children:
            return {}
        return children[0] if len(children) == 1 else {"$and": children}
    if isinstance(expr, Or):
        children = [_expr(child) for child in expr.children]
        return children[0] if len(children) == 1 else {"$or": children}
    if isinstance(expr, Not):
        # No level spent where none is needed: a double negation is its inner condition, and
        # a negated $or (a $nor as given) is one $nor.
        if isinstance(expr.child, Not):
            return _expr(expr.child.child)
        negated = expr.child.children if isinstance(expr.child, Or) else (expr.child,)
        return {"$nor": [_expr(child) for child in negated]}
    return {expr.path: _condition(expr)}


def _condition(condition: PathCondition) -> Any:
    predicate: Predicate = condition.predicate
    if isinstance(predicate, Eq):
        # The plain form, as given most often ({"k": "x"}), which FerretDB may push down to
        # its SQL; a document is never compared on FerretDB (refused before this).
        value = predicate.value
        return {"$eq": value} if isinstance(value, dict) else value
    if isinstance(predicate, Cmp):
        return {predicate.op.value: predicate.value}
    if isinstance(predicate, In):
        return {"$in": list(predicate.values)}
    if isinstance(predicate, Exists):
        return {"$exists": True}
    if isinstance(predicate, Regex):
        if predicate.options:
            return {"$regex": predicate.pattern, "$options": predicate.options}
        return {"$regex": predicate.pattern}
    if isinstance(predicate, Size):
        return {"$size": predicate.size}
    if isinstance(predicate, Type):
        codes = sorted(predicate.codes & ENTRY_TYPES)
        return {"$type": codes} if codes else dict(_NOTHING)
    if isinstance(predicate, Never):
        return dict(_NOTHING)
    # $elemMatch: refused on FerretDB before the filter is written again.
    raise InvalidFilterError(f"the condition on {condition.path!r} cannot be sent to FerretDB")
