"""Churn since a revision, from a runtime inventory's change log."""

from __future__ import annotations

from meshctl.source.runtime import RuntimeInventory


def inventory(log: list[tuple[int, str, str]], revision: int, log_start: int = 0) -> RuntimeInventory:
    return RuntimeInventory("test", revision, (), (), log=tuple(log), log_start=log_start)


def test_added_and_deleted_since_a_revision() -> None:
    log = [(1, "+", "a/x"), (2, "+", "a/y"), (3, "-", "a/x"), (4, "+", "a/z"), (5, "-", "a/old")]
    inv = inventory(log, 5)
    churn = inv.churn_since(1)
    assert churn.added == ("a/y", "a/z") and churn.deleted == ("a/x", "a/old") and churn.complete
    assert churn.describe().startswith("2 pods added and 2 pods deleted since the last apply")
    assert not inv.churn_since(5).any


def test_a_pod_that_came_and_went_is_no_churn_and_one_that_came_back_is_none_either() -> None:
    inv = inventory([(2, "+", "a/tmp"), (3, "-", "a/tmp"), (4, "-", "a/web"), (5, "+", "a/web")], 5)
    churn = inv.churn_since(1)
    assert churn.added == () and churn.deleted == ()


def test_a_log_that_no_longer_reaches_back_says_so() -> None:
    churn = inventory([(9, "+", "a/x")], 9, log_start=8).churn_since(3)
    assert not churn.complete and "older changes are no longer logged" in churn.describe()


def test_an_inventory_without_a_change_log_says_so_instead_of_no_changes() -> None:
    """The Kubernetes inventory of the CLI is one list: it cannot tell what churned since."""
    from meshctl.source.runtime import RuntimeInventory

    listed = RuntimeInventory("the Kubernetes API of c", 905, (), (), log_start=905)
    churn = listed.churn_since(880)
    assert not churn.any and not churn.complete
    assert churn.describe() == ("pod changes since the last apply are not logged by this inventory "
                                "(inventory revision 880 -> 905)")
