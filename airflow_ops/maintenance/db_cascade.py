"""The rows that go with a deleted row, and the SQL that counts, copies or deletes them.

A :class:`CascadeTree` is built from the live catalog's foreign keys: every ON DELETE CASCADE
child (recursively) is deleted with its parent, every ON DELETE SET NULL child is unlinked. The
same tree serves three ways of running a batch:

- counting (the dry run, and the cascade counts in trigger mode): one statement per child table;
- trigger mode: PostgreSQL's own foreign-key triggers do the cascade when the root row is deleted
  (one trigger call per child table per deleted row);
- set-based mode: with ``session_replication_role = replica`` (no FK triggers in this
  transaction) the children are deleted bottom-up with one join statement per tree node, which is
  what makes cleanup several times faster. It is only used when every foreign key under the root
  is a CASCADE or SET NULL the tree emulates; a RESTRICT/NO ACTION key under the root, a SET
  DEFAULT, or a user trigger makes the table fall back to trigger mode.

Statements join a child to the root along the foreign keys, with aliases ``p0`` (the root),
``p1`` … ``pN`` (the node); ``root_condition`` restricts ``p0``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .db_catalog import Catalog, ForeignKey, TableInfo
from .db_connection import column_list, quote_ident


@dataclass(frozen=True)
class Node:
    """A child table reached from the root through ``path`` (root-most foreign key first)."""

    path: tuple[ForeignKey, ...]
    unlink: bool  # SET NULL: rows are updated, not deleted
    children: tuple[Node, ...] = ()
    # (node column, root column) pairs the foreign keys along the path make equal, when an index
    # of the node leads with them: the node is then joined to the root directly.
    shortcut: tuple[tuple[str, str], ...] | None = None

    @property
    def table(self) -> str:
        return self.path[-1].child

    @property
    def depth(self) -> int:
        return len(self.path)


@dataclass(frozen=True)
class CascadeTree:
    root: TableInfo
    nodes: tuple[Node, ...]  # direct children of the root
    # Foreign keys into the root whose rows protect a root row (not cascaded into, or RESTRICT).
    protecting: tuple[ForeignKey, ...]
    # Why set-based deletes would not be exact for this root (empty: they are).
    set_based_blockers: tuple[str, ...] = field(default=())

    def post_order(self) -> Iterator[Node]:
        """Every node, children before their parent: the order rows must go in."""

        def walk(nodes: tuple[Node, ...]) -> Iterator[Node]:
            for node in nodes:
                yield from walk(node.children)
                yield node

        yield from walk(self.nodes)

    def inner_nodes(self) -> Iterator[Node]:
        """Nodes with children of their own, parents first: the rows to lock before any delete."""

        def walk(nodes: tuple[Node, ...]) -> Iterator[Node]:
            for node in nodes:
                if node.children:
                    yield node
                    yield from walk(node.children)

        yield from walk(self.nodes)

    def tables(self) -> list[str]:
        """Child tables in post-order, each once."""
        return list(dict.fromkeys(node.table for node in self.post_order()))

    def nodes_of(self, table: str) -> list[Node]:
        return [node for node in self.post_order() if node.table == table]


def build_tree(catalog: Catalog, root: str, cascade_into: tuple[str, ...] | None) -> CascadeTree:
    """The cascade of deleting rows of ``root``; ``cascade_into`` limits the root's direct children
    (None: all); rows referenced from any other table are protected instead."""
    blockers: list[str] = []
    protecting: list[ForeignKey] = []

    def children(table: str, path: tuple[ForeignKey, ...]) -> tuple[Node, ...]:
        nodes = []
        for fk in catalog.referencing(table):
            at_root = not path
            seen = {root} | {p.child for p in path}
            if fk.child in seen:
                blockers.append(f"{fk.name}: a foreign-key cycle through {fk.child}")
                continue
            allowed = not at_root or cascade_into is None or fk.child in cascade_into
            if fk.blocks_delete or not allowed:
                if at_root:
                    protecting.append(fk)
                else:
                    blockers.append(f"{fk.name} ({fk.child} -> {fk.parent}) is {fk.on_delete.upper()}")
                continue
            here = (*path, fk)
            if fk.on_delete == "cascade":
                nodes.append(Node(here, False, children(fk.child, here), _shortcut(catalog, here)))
            elif fk.on_delete == "set null":
                nodes.append(Node(here, True, (), _shortcut(catalog, here)))
            else:
                blockers.append(f"{fk.name} ({fk.child} -> {fk.parent}) is ON DELETE {fk.on_delete.upper()}")
        return tuple(nodes)

    nodes = children(root, ())
    tree = CascadeTree(catalog.tables[root], nodes, tuple(protecting))
    triggered = [t for t in [root, *tree.tables()] if catalog.tables[t].has_user_triggers]
    if triggered:
        blockers.append(f"user triggers on {', '.join(triggered)}")
    return CascadeTree(tree.root, tree.nodes, tree.protecting, tuple(dict.fromkeys(blockers)))


def _shortcut(catalog: Catalog, path: tuple[ForeignKey, ...]) -> tuple[tuple[str, str], ...] | None:
    """Columns of the path's last table that equal the root's join columns through every foreign
    key of the path (e.g. task_instance_history.(dag_id, run_id) = dag_run.(dag_id, run_id) through
    task_instance), if an index of that table leads with them; else None."""
    if len(path) < 2:
        return None
    # root column -> column of the current table equal to it
    equal = dict(zip(path[0].parent_columns, path[0].child_columns, strict=True))
    for fk in path[1:]:
        down = dict(zip(fk.parent_columns, fk.child_columns, strict=True))
        if not all(col in down for col in equal.values()):
            return None
        equal = {root: down[col] for root, col in equal.items()}
    wanted = set(equal.values())
    for _, columns in catalog.indexes.get(path[-1].child, ()):
        if set(columns[: len(wanted)]) == wanted:
            return tuple((col, root) for root, col in equal.items())
    return None


# ------------------------------------------------------------------ SQL


def fk_condition(fk: ForeignKey, child_alias: str, parent_alias: str) -> str:
    return " AND ".join(
        f"{child_alias}.{quote_ident(c)} = {parent_alias}.{quote_ident(p)}"
        for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
    )


@dataclass(frozen=True)
class RootFilter:
    """Which root rows a statement is about: SQL over ``p0``, the root's FROM item (a sample
    clause may follow the table), and the statement's parameters."""

    condition: str
    params: dict[str, object]
    sample: str = ""  # e.g. "TABLESAMPLE SYSTEM (1) REPEATABLE (7)"


def _joins(node: Node, root: TableInfo, flt: RootFilter) -> tuple[list[str], list[str]]:
    """(FROM items of the node's ancestors down to the root, join conditions) for a node ``p{depth}``."""
    root_item = f"{quote_ident(root.name)} p0 {flt.sample}".rstrip()
    if node.shortcut is not None:
        me = f"p{node.depth}"
        conds = [f"{me}.{quote_ident(c)} = p0.{quote_ident(r)}" for c, r in node.shortcut]
        return [root_item], [*conds, f"({flt.condition})"]
    items, conds = [], []
    for level in range(node.depth, 0, -1):
        fk = node.path[level - 1]
        conds.append(fk_condition(fk, f"p{level}", f"p{level - 1}"))
        parent = fk.parent
        if level - 1 == 0:
            items.append(root_item)
        else:
            items.append(f"{quote_ident(parent)} p{level - 1}")
    conds.append(f"({flt.condition})")
    return items, conds


def select_rows_sql(node: Node, root: TableInfo, flt: RootFilter, columns: str) -> str:
    items, conds = _joins(node, root, flt)
    me = f"{quote_ident(node.table)} p{node.depth}"
    return f"SELECT {columns} FROM {me}, {', '.join(items)} WHERE {' AND '.join(conds)}"


def lock_sql(node: Node, root: TableInfo, flt: RootFilter) -> str:
    """Lock a node's rows FOR UPDATE. In set-based mode no FK trigger guards the gap between
    deleting a table's rows and their parents', so the parents are locked first: a concurrent
    insert of a child row then waits (its FK check needs FOR KEY SHARE) and fails after commit."""
    inner = select_rows_sql(node, root, flt, "1") + f" FOR UPDATE OF p{node.depth}"
    return f"SELECT count(*) FROM ({inner}) locked"


def delete_sql(node: Node, root: TableInfo, flt: RootFilter, returning: bool = False) -> str:
    items, conds = _joins(node, root, flt)
    me = f"p{node.depth}"
    sql = f"DELETE FROM {quote_ident(node.table)} {me} USING {', '.join(items)} WHERE {' AND '.join(conds)}"
    return sql + (f" RETURNING {me}.*" if returning else "")


def unlink_sql(node: Node, root: TableInfo, flt: RootFilter) -> str:
    items, conds = _joins(node, root, flt)
    me = f"p{node.depth}"
    sets = ", ".join(f"{quote_ident(c)} = NULL" for c in node.path[-1].child_columns)
    where = " AND ".join(conds)
    return f"UPDATE {quote_ident(node.table)} {me} SET {sets} FROM {', '.join(items)} WHERE {where}"


def _distinct(nodes: Sequence[Node], root: TableInfo, flt: RootFilter, catalog: Catalog, what: str) -> str:
    """``SELECT what`` (over alias ``{me}``) of the rows of one table reached through any of
    ``nodes`` (a table can hang under the root along several paths, e.g. Airflow 2's
    task_reschedule): each row once."""
    if len(nodes) == 1:
        return select_rows_sql(nodes[0], root, flt, what.format(me=f"p{nodes[0].depth}"))
    table = nodes[0].table
    pk = catalog.tables[table].primary_key
    keys = " UNION ".join(select_rows_sql(n, root, flt, column_list(f"p{n.depth}", pk)) for n in nodes)
    return (
        f"SELECT {what.format(me='u')} FROM {quote_ident(table)} u WHERE {column_list('u', pk)} IN ({keys})"
    )


def count_sql(nodes: Sequence[Node], root: TableInfo, flt: RootFilter, catalog: Catalog) -> str:
    return _distinct(nodes, root, flt, catalog, "count(*)")


def rows_sql(nodes: Sequence[Node], root: TableInfo, flt: RootFilter, catalog: Catalog) -> str:
    """The rows themselves (to copy them to the archive before PostgreSQL cascades them away)."""
    return _distinct(nodes, root, flt, catalog, "{me}.*")


def key_filter(root: TableInfo, keys: Sequence[tuple[object, ...]]) -> RootFilter:
    """Root rows by primary key (a batch's victims)."""
    pk = root.primary_key
    if len(pk) == 1:
        return RootFilter(
            f"p0.{quote_ident(pk[0])} = ANY(%(k0)s::{root.type_of(pk[0])}[])", {"k0": [k[0] for k in keys]}
        )
    arrays = ", ".join(f"%(k{i})s::{root.type_of(c)}[]" for i, c in enumerate(pk))
    params: dict[str, object] = {f"k{i}": [k[i] for k in keys] for i in range(len(pk))}
    return RootFilter(f"{column_list('p0', pk)} IN (SELECT * FROM unnest({arrays}))", params)


def after_condition(
    root: TableInfo, after: tuple[object, ...] | None, upto: tuple[object, ...] | None
) -> tuple[str, dict[str, object]]:
    """Keyset range ``after < pk <= upto`` over ``p0`` (either bound may be open)."""
    pk = root.primary_key
    cols = column_list("p0", pk)
    parts, params = [], {}
    for name, bound, op in (("lo", after, ">"), ("hi", upto, "<=")):
        if bound is None:
            continue
        names = [f"{name}{i}" for i in range(len(pk))]
        params.update(zip(names, bound, strict=True))
        values = ", ".join(f"%({n})s" for n in names)
        parts.append(f"{cols} {op} ({values})" if len(pk) > 1 else f"{cols} {op} {values}")
    return " AND ".join(parts) or "TRUE", params
