"""MathGrader mechanics: statuses, fast path, worker processes, timeouts, crashes and clean-up.

Agreement with a human grader on individual answers lives in test_grader_cases.py.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import pytest

from rlvr_cli.rewards import STATUSES, Grade, MathGrader, answers_equivalent
from rlvr_cli.rewards import grader as grader_module
from rlvr_cli.rewards.grader import CRASH_TOKEN, HANG_TOKEN, TEST_HOOK_ENV

# Only a guard against a hang; the tests make no claim about speed.
HANG_GUARD_S = 30.0


def boxed(answer: str) -> str:
    return f"The final answer is $\\boxed{{{answer}}}$."


def process_state(pid: int) -> str | None:
    """State letter from /proc (R, S, Z, ...) or None once the process has been reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def wait_until_gone(pids: list[int], allow_zombie: bool = False, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    finished = {None, "Z"} if allow_zombie else {None}
    while time.monotonic() < deadline:
        if all(process_state(pid) in finished for pid in pids):
            return
        time.sleep(0.05)
    pytest.fail(f"processes still present: {[(pid, process_state(pid)) for pid in pids]}")


@pytest.fixture
def grader():
    with MathGrader(timeout_s=10.0, num_workers=2) as instance:
        yield instance


@pytest.fixture
def hooked_grader(monkeypatch):
    """A grader whose workers honour the hang/crash test hooks, with a short timeout."""
    monkeypatch.setenv(TEST_HOOK_ENV, "1")
    with MathGrader(timeout_s=1.0, num_workers=2) as instance:
        yield instance


# ------------------------------------------------------------------------------------------
# Grade and statuses
# ------------------------------------------------------------------------------------------


def test_grade_is_frozen_and_scored_by_status() -> None:
    grade = Grade.from_status("correct", "5")
    assert grade == Grade(1.0, "5", "correct")
    for status in STATUSES[1:]:
        assert Grade.from_status(status, None).score == 0.0
    with pytest.raises(AttributeError):
        grade.score = 0.0  # type: ignore[misc]


def test_each_status(grader: MathGrader) -> None:
    grades = grader.grade(
        [boxed("42"), boxed("41"), "I am not sure.", boxed(r"\sqrt{12}"), boxed(r"\sqrt{2}")],
        ["42", "42", "42", r"2\sqrt{3}", ""],
    )
    assert [g.status for g in grades] == ["correct", "wrong", "no_answer", "correct", "parse_error"]
    assert [g.score for g in grades] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert [g.extracted for g in grades] == ["42", "41", None, r"\sqrt{12}", r"\sqrt{2}"]


def test_counts_are_running_totals(grader: MathGrader) -> None:
    grader.grade([boxed("1"), boxed("2")], ["1", "1"])
    grader.grade(["nothing"], ["1"])
    assert grader.grade([], []) == []
    assert grader.counts == {"correct": 1, "wrong": 1, "no_answer": 1}


def test_grade_one_and_answer_line_mode() -> None:
    with MathGrader(extract="answer_line") as grader:
        assert grader.grade_one("work...\nAnswer: 1,000", "1000").status == "correct"
        assert grader.grade_one(boxed("1000"), "1000").status == "no_answer"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="answer_line"):
        MathGrader(extract="nope")
    with pytest.raises(ValueError):
        MathGrader(timeout_s=0)
    with pytest.raises(ValueError):
        MathGrader(num_workers=0)
    with MathGrader() as grader, pytest.raises(ValueError, match="2 responses but 1 answers"):
        grader.grade(["a", "b"], ["1"])


def test_non_string_gold_is_accepted(grader: MathGrader) -> None:
    assert grader.grade_one(boxed("7"), 7).status == "correct"  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Fast path and in-process comparison
# ------------------------------------------------------------------------------------------


def test_integer_batch_never_starts_a_worker(grader: MathGrader) -> None:
    responses = [boxed(f"{i:03d}") if i % 4 else boxed(str(i + 1)) for i in range(128)]
    grades = grader.grade(responses, [str(i) for i in range(128)])
    assert sum(g.status == "correct" for g in grades) == 96
    assert grader._pool.workers == []


@pytest.mark.parametrize(
    "pred, gold, expected",
    [("025", "25", True), ("1,234", "1234", True), ("-\\frac{1}{2}", "-0.5", True),
     ("\\dfrac{3}{4}", "3/4", True), ("+7.", "7", True), ("0.333", "1/3", False), ("12", "21", False)],
)
def test_fast_path_does_not_use_math_verify(monkeypatch, pred: str, gold: str, expected: bool) -> None:
    def fail(*_args: object) -> str:
        raise AssertionError("math-verify should not be reached")

    monkeypatch.setattr(grader_module, "symbolic_status", fail)
    assert answers_equivalent(pred, gold) is expected


def test_answers_equivalent_uses_math_verify_for_latex() -> None:
    assert answers_equivalent(r"\sqrt{12}", r"2\sqrt{3}")
    assert not answers_equivalent(r"\sqrt{13}", r"2\sqrt{3}")


def test_math_verify_signal_timeouts_are_off() -> None:
    """math-verify's own timeouts use SIGALRM and raise in a non-main thread; ours are off."""
    results: list[bool] = []
    thread = threading.Thread(
        target=lambda: results.append(answers_equivalent(r"\frac{\pi}{2}", r"\pi/2"))
    )
    thread.start()
    thread.join(HANG_GUARD_S)
    assert results == [True]


def test_identical_slow_pairs_are_compared_once(grader: MathGrader, monkeypatch) -> None:
    seen: list[int] = []
    original = grader._pool.run

    def spy(jobs):
        seen.append(len(jobs))
        return original(jobs)

    monkeypatch.setattr(grader._pool, "run", spy)
    grades = grader.grade([boxed(r"\sqrt{12}")] * 5 + [boxed(r"\sqrt{3}")], [r"2\sqrt3"] * 6)
    assert seen == [2]
    assert [g.status for g in grades] == ["correct"] * 5 + ["wrong"]


# ------------------------------------------------------------------------------------------
# Worker processes: concurrency, runaways, crashes
# ------------------------------------------------------------------------------------------


def test_items_run_concurrently_on_num_workers(grader: MathGrader, monkeypatch) -> None:
    pool = grader._pool
    # Start both workers and wait until they are ready, so that the first dispatch has two idle
    # workers (otherwise one fast worker may legitimately finish everything alone).
    pool._start_workers(2)
    deadline = time.monotonic() + HANG_GUARD_S
    while any(w.state == "starting" for w in pool.workers) and time.monotonic() < deadline:
        pool._collect([])
    assert [w.state for w in pool.workers] == ["idle", "idle"]
    original = pool._dispatch
    busy_after_dispatch: list[int] = []

    def spy(pending, jobs):
        original(pending, jobs)
        busy_after_dispatch.append(len(pool._busy()))

    monkeypatch.setattr(pool, "_dispatch", spy)
    gold = [rf"\sqrt{{{n * n * 2}}}" for n in range(2, 8)]
    grades = grader.grade([boxed(rf"{n}\sqrt{{2}}") for n in range(2, 8)], gold)
    assert all(g.status == "correct" for g in grades)
    assert max(busy_after_dispatch) == 2
    assert len(pool.pids()) == 2


def test_runaway_comparison_is_killed_and_grader_keeps_working(hooked_grader: MathGrader) -> None:
    started = time.monotonic()
    grades = hooked_grader.grade(
        [boxed(HANG_TOKEN), boxed(r"\sqrt{12}"), boxed("5"), boxed(r"\frac{\pi}{2}")],
        ["1", r"2\sqrt{3}", "5", r"\pi/2"],
    )
    assert time.monotonic() - started < HANG_GUARD_S
    assert [g.status for g in grades] == ["timeout", "correct", "correct", "correct"]
    assert grades[0] == Grade(0.0, HANG_TOKEN, "timeout")

    # The grader still works afterwards, including a second runaway.
    assert hooked_grader.grade_one(boxed(r"2\sqrt{3}"), r"\sqrt{12}").status == "correct"
    assert hooked_grader.grade_one(boxed(HANG_TOKEN), "1").status == "timeout"
    assert hooked_grader.grade_one(boxed(r"x^2"), r"x^{2}").status == "correct"
    assert hooked_grader.counts["timeout"] == 2


def test_killed_worker_is_reaped_not_left_as_zombie(hooked_grader: MathGrader, monkeypatch) -> None:
    pool = hooked_grader._pool
    killed: list[int] = []
    original = pool._discard

    def spy(worker):
        killed.append(worker.pid)
        original(worker)

    monkeypatch.setattr(pool, "_discard", spy)
    assert hooked_grader.grade_one(boxed(HANG_TOKEN), "1").status == "timeout"
    assert len(killed) == 1
    assert process_state(killed[0]) is None  # killed and joined: no zombie
    assert killed[0] not in pool.pids()


def test_crashed_worker_gives_parse_error_and_is_replaced(hooked_grader: MathGrader) -> None:
    grades = hooked_grader.grade([boxed(CRASH_TOKEN), boxed(r"\sqrt{8}")], ["1", r"2\sqrt{2}"])
    assert [g.status for g in grades] == ["parse_error", "correct"]
    assert hooked_grader.grade_one(boxed(r"\sqrt{8}"), r"2\sqrt2").status == "correct"


def test_spawn_start_method_works(monkeypatch) -> None:
    monkeypatch.setenv(TEST_HOOK_ENV, "1")
    with MathGrader(timeout_s=1.0, num_workers=1, start_method="spawn") as grader:
        grades = grader.grade([boxed(r"\sqrt{12}"), boxed(HANG_TOKEN)], [r"2\sqrt{3}", "1"])
        assert [g.status for g in grades] == ["correct", "timeout"]


# ------------------------------------------------------------------------------------------
# Shutdown
# ------------------------------------------------------------------------------------------


def start_workers(grader: MathGrader) -> list[int]:
    grader.grade([boxed(r"\sqrt{12}"), boxed(r"x+1")], [r"2\sqrt3", "1+x"])
    pids = grader._pool.pids()
    assert pids and all(process_state(pid) not in (None, "Z") for pid in pids)
    return pids


def test_close_is_idempotent_and_reaps_workers() -> None:
    grader = MathGrader(num_workers=2)
    pids = start_workers(grader)
    grader.close()
    grader.close()
    wait_until_gone(pids)
    with pytest.raises(RuntimeError, match="closed"):
        grader.grade_one(boxed("1"), "1")


def test_context_manager_closes() -> None:
    with MathGrader() as grader:
        pids = start_workers(grader)
    wait_until_gone(pids)


def test_garbage_collection_closes() -> None:
    grader = MathGrader()
    pids = start_workers(grader)
    del grader
    gc.collect()
    wait_until_gone(pids)


def test_workers_exit_on_their_own_when_the_parent_goes_away() -> None:
    """If the parent dies, the kernel closes its pipe ends and each worker's ``recv`` hits EOF.

    Simulated here by closing the parent's ends without asking the workers to stop (killing a
    real parent would leave orphans that a container's init may never reap).  Forked siblings
    hold copies of older siblings' parent ends, so this also checks that they unwind in turn.
    """
    grader = MathGrader(num_workers=2)
    start_workers(grader)
    workers = list(grader._pool.workers)
    for worker in workers:
        worker.conn.close()
    for worker in workers:
        worker.process.join(HANG_GUARD_S)
    assert [worker.process.exitcode for worker in workers] == [0, 0]
    grader.close()


# ------------------------------------------------------------------------------------------
# Already-extracted answers, background grading, maj@k clusters (issue 11)
# ------------------------------------------------------------------------------------------


def test_compare_grades_extracted_answers_through_the_pool(grader: MathGrader) -> None:
    grades = grader.compare([r"2\sqrt{3}", "0.5", None, r"\sqrt{13}"], [r"\sqrt{12}", r"\frac{1}{2}", "1", r"\sqrt{12}"])
    assert [g.status for g in grades] == ["correct", "correct", "no_answer", "wrong"]
    with pytest.raises(ValueError, match="2 predictions but 1 answers"):
        grader.compare(["1", "2"], ["1"])


def test_compare_keeps_the_timeout(monkeypatch) -> None:
    monkeypatch.setenv(TEST_HOOK_ENV, "1")
    with MathGrader(timeout_s=0.5, num_workers=1) as g:
        assert g.compare([HANG_TOKEN], [r"\sqrt{2}"])[0].status == "timeout"


def test_grade_async_returns_the_same_grades(grader: MathGrader) -> None:
    responses, answers = [boxed(r"\frac{\pi}{2}"), boxed("3"), "none"], [r"\pi/2", "4", "1"]
    future = grader.grade_async(responses, answers)
    assert [g.status for g in future.result(timeout=60)] == [g.status for g in grader.grade(responses, answers)]


def test_grade_takes_a_per_call_extraction(grader: MathGrader) -> None:
    assert grader.grade(["#### 18"], ["18"])[0].status == "no_answer"  # the grader's own: auto
    assert grader.grade(["#### 18"], ["18"], extract="gsm8k")[0].status == "correct"


def test_rel_tol_is_configurable() -> None:
    with MathGrader(rel_tol=1e-4) as loose, MathGrader() as strict:
        assert loose.compare(["0.333333"], [r"\frac{1}{3}"])[0].status == "correct"
        assert strict.compare(["0.333333"], [r"\frac{1}{3}"])[0].status == "wrong"
    with pytest.raises(ValueError, match="rel_tol"):
        MathGrader(rel_tol=1.5)


def test_clusters_put_equal_spellings_in_one_vote(grader: MathGrader) -> None:
    labels = grader.clusters([
        [r"\dfrac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", "1", r"\frac{\sqrt{3}}{2}", None, "1"],
        ["0.5", r"\frac{1}{2}", "2"],
    ])
    assert labels[0][0] == labels[0][1] == labels[0][3] != labels[0][2]
    assert labels[0][4] is None and labels[0][2] == labels[0][5]
    assert labels[1][0] == labels[1][1] != labels[1][2]


def test_clusters_respect_the_cap(grader: MathGrader) -> None:
    """Beyond the cap, distinct answers are not compared (each keeps its own vote)."""
    answers = [rf"\sqrt{{{k}}}" for k in (2, 3, 5)] + [r"\sqrt{8}/2"]  # sqrt(8)/2 = sqrt(2)
    assert grader.clusters([answers], cap=16)[0][3] == 0
    assert grader.clusters([answers], cap=2)[0][3] == 3


def test_maj_at_k_votes_by_equivalence(grader: MathGrader) -> None:
    """Three spellings of √3/2 outvote two 1's: text keys alone would let "1" win."""
    from rlvr_cli.eval.metrics import summarize_samples
    from types import SimpleNamespace as S

    extracted = ["1", "1", r"\dfrac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", r"\frac{\sqrt{3}}{2}"]
    samples = [S(problem_id="p", correct=e != "1", extracted=e, length=1, truncated=False, status="x") for e in extracted]
    assert summarize_samples(samples, 5)["maj@5"] == 0.0
    assert summarize_samples(samples, 5, grader)["maj@5"] == 1.0
