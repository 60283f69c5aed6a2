"""session messages beyond login: passwords, subject identifiers, local logins."""

from __future__ import annotations

from tests.api.world import ROOT_PASSWORD, USER_PASSWORD, World


async def test_user_changes_own_password(world: World) -> None:
    await world.add_user("ann", ["read-only"])
    s = await world.login_user("ann")
    assert await world.fail("session.change_password", s, "wrong", "new") == [
        "SESSION_AUTHENTICATION_FAILED",
        "ann",
        "Authentication failure",
    ]
    assert await world.fail("session.change_password", s, USER_PASSWORD, "") == [
        "CHANGE_PASSWORD_REJECTED",
        "The new password must not be empty",
    ]
    assert await world.call("session.change_password", s, USER_PASSWORD, "fresh") == ""
    assert await world.call("session.login_with_password", "ann", "fresh")
    err = await world.fail("session.login_with_password", "ann", USER_PASSWORD)
    assert err[0] == "SESSION_AUTHENTICATION_FAILED"


async def test_root_changes_root_password(world: World) -> None:
    s = await world.call("session.login_with_password", "root", ROOT_PASSWORD)
    await world.call("session.change_password", s, ROOT_PASSWORD, "another")
    assert await world.call("session.login_with_password", "root", "another")


async def test_logout_subject_identifier_spares_the_caller(world: World) -> None:
    await world.add_user("ann", ["read-only"])
    a1, a2 = await world.login_user("ann"), await world.login_user("ann")
    assert await world.call("session.get_all_subject_identifiers", world.root) == ["local:ann"]
    await world.call("session.logout_subject_identifier", world.root, "local:ann")
    assert world.store.get("session", a1) is None and world.store.get("session", a2) is None
    assert world.store.get("session", world.root) is not None
    assert await world.call("session.get_all_subject_identifiers", world.root) == []


async def test_slave_local_login_needs_pool_admin(world: World) -> None:
    await world.add_user("ann", ["vm-admin"])
    err = await world.fail("session.slave_local_login_with_password", "ann", USER_PASSWORD)
    assert err[0] == "RBAC_PERMISSION_DENIED"
    s = await world.call("session.slave_local_login_with_password", "root", ROOT_PASSWORD)
    assert await world.call("session.local_logout", s) == ""
    assert world.store.get("session", s) is None


async def test_unknown_account_is_refused(world: World) -> None:
    err = await world.fail("session.login_with_password", "nobody", "x")
    assert err == ["SESSION_AUTHENTICATION_FAILED", "nobody", "Authentication failure"]
