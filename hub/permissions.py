"""Agent permission bits and the rules of who may do what with conversations and agents."""

from __future__ import annotations

from uuid import UUID

from hub.errors import Forbidden

ADMIN = 0x20
MANAGER = 0x40
ALL_BITS = ADMIN | MANAGER
NIL_UUID = UUID(int=0)


def is_admin_or_manager(permission: int) -> bool:
    return bool(permission & (ADMIN | MANAGER))


def require_admin_or_manager(permission: int) -> None:
    if not is_admin_or_manager(permission):
        raise Forbidden("this operation needs admin or manager permission")


def check_list_owner_filter(agent_id: UUID, permission: int, owner_id: UUID | None) -> UUID | None:
    """The owner filter to apply: an agent without admin/manager must ask for its own id."""
    if is_admin_or_manager(permission):
        return None if owner_id in (None, NIL_UUID) else owner_id
    if owner_id != agent_id:
        raise Forbidden("an agent without admin or manager permission must pass its own owner_id")
    return owner_id


def check_unassign(agent_id: UUID, permission: int, current_owner_id: UUID) -> None:
    if is_admin_or_manager(permission) or current_owner_id == agent_id:
        return
    raise Forbidden("only the owning agent or an admin or manager may unassign this conversation")


def check_owner_or_admin(agent_id: UUID, permission: int, current_owner_id: UUID, action: str) -> None:
    """Only the owning agent or an admin/manager may `action` (e.g. "tag") this conversation."""
    if is_admin_or_manager(permission) or current_owner_id == agent_id:
        return
    raise Forbidden(f"only the owning agent or an admin or manager may {action} this conversation")
def check_participants(agent_id: UUID, permission: int, current_owner_id: UUID) -> None:
    """Adding and removing participants: the owning agent or an admin or manager."""
    check_owner_or_admin(agent_id, permission, current_owner_id, "change the participants of")


def check_grant(caller_permission: int, requested: int) -> None:
    """A caller grants only bits it holds itself; an admin may grant every bit."""
    if caller_permission & ADMIN:
        return
    if requested & ~caller_permission:
        raise Forbidden("cannot grant a permission the caller does not have")


def check_manage(caller_permission: int, target_permission: int) -> None:
    """A caller updates or deletes only agents whose bits it holds itself; an admin manages all.

    Otherwise a manager could reset an admin's password and log in as that admin."""
    if caller_permission & ADMIN:
        return
    if target_permission & ~caller_permission:
        raise Forbidden("cannot manage an agent holding a permission the caller does not have")


def owner_type_for(owner_id: UUID) -> str:
    return "" if owner_id == NIL_UUID else "agent"
