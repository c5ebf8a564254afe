"""The conversation list's statement on PostgreSQL: one plain SQL statement per filter shape, run
with asyncpg on a pool connection (asyncpg prepares each distinct text once per connection).

The same query as hub.pagination.page_query over hub.conversations.list_query_parts (the SQLite
path and the reference tests/integration/test_list_fast_path.py compares against): the filters
AND-ed, a tag filter joining the tag's `conversation_tags` rows and paging by their copy of the
list key (migration 0019), a peer filter through its live participants, keyset pagination with
the implied range first. Piccolo built that query anew for every request (a third of the list's
CPU); here only the few lines of text are joined and the values passed as parameters."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hub.tables import Conversation

_COLUMNS = ", ".join(f'c."{c._meta.db_column_name}"' for c in Conversation._meta.columns)


def page_statement(
    customer_id: UUID,
    owner_id: UUID | None,
    status: str | None,
    account_id: UUID | None,
    type_: str | None,
    peer: tuple[str, str] | None,
    tag: str | None,
    after: tuple[Any, UUID] | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The SQL and its arguments for one page of `limit` rows (values checked and normalised by
    the caller; `after`: the decoded page token)."""
    args: list[Any] = [customer_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    source = "conversations c"
    where = ["c.customer_id = $1", "c.tm_delete IS NULL"]
    tm_create, row_id = "c.tm_create", "c.id"
    if owner_id is not None:
        where.append(f"c.owner_id = {arg(owner_id)}")
    if status is not None:
        where.append(f"c.status = {arg(status)}")
    if account_id is not None:
        where.append(f"c.account_id = {arg(account_id)}")
    if type_ is not None:
        where.append(f"c.type = {arg(type_)}")
    if peer is not None:
        where.append(
            "c.id IN (SELECT p.conversation_id FROM participants p WHERE p.customer_id = $1 "
            f"AND p.address_type = {arg(peer[0])} AND p.target = {arg(peer[1])} AND p.tm_delete IS NULL)"
        )
    if tag is not None:
        # hub.tags.tagged_in_list_order: the tag's rows newest first, each conversation by its key.
        source = "conversations c JOIN conversation_tags t ON t.conversation_id = c.id"
        where += ["t.customer_id = $1", f"t.tag = {arg(tag)}"]
        tm_create, row_id = "t.tm_create", "t.conversation_id"
    if after is not None:
        # hub.pagination.page_query: the implied range first, so the index seeks to the page.
        tm, last_id = arg(after[0]), arg(after[1])
        where.append(f"{tm_create} <= {tm}")
        where.append(f"({tm_create} < {tm} OR ({tm_create} = {tm} AND {row_id} < {last_id}))")
    sql = (
        f"SELECT {_COLUMNS} FROM {source} WHERE {' AND '.join(where)} "
        f"ORDER BY {tm_create} DESC, {row_id} DESC LIMIT {arg(limit)}"
    )
    return sql, args
