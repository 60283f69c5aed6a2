"""session: login, logout and password changes."""

from __future__ import annotations

import asyncio
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.sessions import sessions_of
from openxapi.api.state import ServerState
from openxapi.auth.accounts import ROOT, AccountBook
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF


def book_of(state: ServerState) -> AccountBook:
    book = state.extras.get("accounts")
    if not isinstance(book, AccountBook):
        raise ApiError("INTERNAL_ERROR", "account book unavailable")
    return book


async def _authenticate(
    state: ServerState, ctx: CallContext, uname: str, pwd: str
) -> tuple[bool, str, frozenset[str]]:
    """(is_superuser, subject ref, roles) for valid credentials; raises after a delay."""
    if ctx.local_root:
        return True, NULL_REF, frozenset()
    book = book_of(state)
    book.reload()
    loop = asyncio.get_running_loop()
    acct = await loop.run_in_executor(None, book.verify, uname, pwd)
    if acct is None:
        await asyncio.sleep(state.config.auth_fail_delay)
        raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
    if acct.name == ROOT:
        return True, NULL_REF, frozenset()
    sync_subjects = state.extras.get("sync_subjects")
    if callable(sync_subjects):
        sync_subjects()
    subject = _subject_of(state, acct.name)
    return False, subject, sessions_of(state).subject_roles(subject)


def _subject_of(state: ServerState, name: str) -> str:
    ident = f"local:{name}"
    for ref, rec in state.store.table("subject").items():
        if rec["subject_identifier"] == ident:
            return ref
    raise ApiError("SESSION_AUTHORIZATION_FAILED", name, "The account has no subject record")


@handler("session.login_with_password")
async def login_with_password(
    state: ServerState, ctx: CallContext, uname: str, pwd: str, version: str, originator: str
) -> Any:
    superuser, subject, roles = await _authenticate(state, ctx, uname, pwd)
    if not superuser and not roles:
        raise ApiError("SESSION_AUTHORIZATION_FAILED", uname, "The account has no role")
    sid = "" if superuser else f"local:{uname}"
    ref = sessions_of(state).open(
        uname=uname,
        originator=originator,
        is_superuser=superuser,
        subject=subject,
        sid=sid,
        roles=roles,
    )
    await state.store.sync()
    return ref


@handler("session.slave_local_login_with_password")
async def slave_local_login_with_password(
    state: ServerState, ctx: CallContext, uname: str, pwd: str
) -> Any:
    superuser, subject, roles = await _authenticate(state, ctx, uname, pwd)
    if not superuser and "pool-admin" not in roles:
        raise ApiError(
            "RBAC_PERMISSION_DENIED",
            "session.slave_local_login_with_password",
            "No permission in user session. (Roles with this permission: pool-admin)",
        )
    ref = sessions_of(state).open(
        uname=uname,
        originator="",
        is_superuser=superuser,
        subject=subject,
        sid="" if superuser else f"local:{uname}",
        roles=roles,
    )
    await state.store.sync()
    return ref


@handler("session.logout", "session.local_logout")
async def logout(state: ServerState, ctx: CallContext) -> Any:
    sessions_of(state).close(ctx.session)
    await state.store.sync()
    return ""


@handler("session.change_password")
async def change_password(state: ServerState, ctx: CallContext, old_pwd: str, new_pwd: str) -> Any:
    rec = state.record("session", ctx.session)
    uname = rec["auth_user_name"] or ROOT
    if ctx.local_root and not rec["auth_user_sid"]:
        uname = ROOT
    book = book_of(state)
    book.reload()
    loop = asyncio.get_running_loop()
    acct = await loop.run_in_executor(None, book.verify, uname, old_pwd)
    if acct is None:
        await asyncio.sleep(state.config.auth_fail_delay)
        raise ApiError("SESSION_AUTHENTICATION_FAILED", uname, "Authentication failure")
    if not new_pwd:
        raise ApiError("CHANGE_PASSWORD_REJECTED", "The new password must not be empty")
    await loop.run_in_executor(None, book.set_password, acct.name, new_pwd)
    return ""


@handler("session.get_all_subject_identifiers")
async def get_all_subject_identifiers(state: ServerState, ctx: CallContext) -> Any:
    ids = {rec["auth_user_sid"] for rec in state.store.table("session").values()}
    return sorted(i for i in ids if i)


@handler("session.logout_subject_identifier")
async def logout_subject_identifier(
    state: ServerState, ctx: CallContext, subject_identifier: str
) -> Any:
    sessions = sessions_of(state)
    doomed = [
        ref
        for ref, rec in state.store.table("session").items()
        if rec["auth_user_sid"] == subject_identifier and ref != ctx.session
    ]
    for ref in doomed:
        sessions.close(ref)
    await state.store.sync()
    return ""
