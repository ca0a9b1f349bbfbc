from __future__ import annotations

import pytest

from berth.errors import KernelStateError
from berth.kernel.state import check_transition, classify_exit
from berth.types import KernelState as S
from berth.types import TerminationReason as R


@pytest.mark.parametrize(("code", "flag", "kills", "reason"), [
    (137, True, None, R.OOM_KILLED),  # no counter evidence: Docker's flag decides
    (137, False, None, R.SELF_TERMINATED),
    (137, False, 1, R.OOM_KILLED),
    (137, True, 1, R.OOM_KILLED),
    (137, True, 0, R.SELF_TERMINATED),  # the flag is left over from an OOM the kernel survived
    (137, False, 0, R.SELF_TERMINATED),
    (0, True, 0, R.SELF_TERMINATED),
    (0, True, None, R.SELF_TERMINATED),
    (135, False, 0, R.SHM_EXHAUSTED),
    (1, False, 0, R.SELF_TERMINATED),
    (None, False, None, R.SELF_TERMINATED),
])
def test_classify_exit(code: int | None, flag: bool, kills: int | None, reason: R) -> None:
    assert classify_exit(code, flag, kills) == reason


def test_legal_and_illegal_transitions() -> None:
    check_transition("k", S.PREPARING, S.PULLING)
    check_transition("k", S.RUNNING, S.TERMINATING)
    for current, target in [(S.TERMINATED, S.RUNNING), (S.RUNNING, S.CREATING),
                            (S.PREPARING, S.RUNNING)]:
        with pytest.raises(KernelStateError):
            check_transition("k", current, target)
