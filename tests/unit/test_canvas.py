"""The shape of each job's canvas: which tasks, which queues, which order, which ids (not run)."""

from __future__ import annotations

from celery.canvas import _chord, group

from maie.canvas import (
    asr_part_task_id,
    asr_parts_canvas,
    audio_canvas,
    chunk_task_id,
    job_canvas,
    notes_canvas,
)
from maie.celery import TASK_ROUTES, app
from maie.lanes import is_short, pool_of, with_lanes
from maie.settings import load_settings


def queue_of(task_name: str) -> str:
    return TASK_ROUTES[task_name]["queue"]


def test_enhance_and_summary_is_a_chord_of_chunks_then_summary() -> None:
    canvas = job_canvas(app, "job1", 3, ["enhance", "summary"])
    assert isinstance(canvas, _chord)
    header = canvas.tasks
    assert [t.task for t in header] == ["maie.enhance_chunk"] * 3
    assert [t.kwargs for t in header] == [{"job_id": "job1", "index": i} for i in range(3)]
    assert [t.options["task_id"] for t in header] == [chunk_task_id("job1", i) for i in range(3)]
    assert canvas.body.task == "maie.summarize"
    assert canvas.body.options["task_id"] == "job1"
    assert queue_of("maie.enhance_chunk") == "enhance" and queue_of("maie.summarize") == "summary"


def test_chunk_results_are_not_stored_but_the_final_tasks_are() -> None:
    import maie.tasks as tasks

    canvas = job_canvas(app, "job5", 2, ["enhance", "summary"])
    # The chord counter takes a chunk's return value directly; nothing reads a stored copy.
    assert all(t.options["ignore_result"] for t in canvas.tasks)
    assert tasks.enhance_chunk.ignore_result and tasks.enhance_chunk.store_errors_even_if_ignored
    # Job.status reads the final task's STARTED state; the notes' results feed their chord.
    assert "ignore_result" not in canvas.body.options
    assert not tasks.summarize.ignore_result and not tasks.assemble.ignore_result
    assert not tasks.partial_notes_task.ignore_result


def test_enhance_only_ends_with_assemble() -> None:
    canvas = job_canvas(app, "job2", 2, ["enhance"])
    assert isinstance(canvas, _chord)
    assert canvas.body.task == "maie.assemble" and queue_of("maie.assemble") == "summary"


def test_summary_only_is_one_task() -> None:
    canvas = job_canvas(app, "job3", 5, ["summary"])
    assert canvas.task == "maie.summarize" and canvas.kwargs == {"job_id": "job3"}


def test_arguments_carry_ids_only() -> None:
    canvas = job_canvas(app, "job4", 2, ["enhance", "summary"])
    for sig in [*canvas.tasks, canvas.body]:
        assert set(sig.kwargs) <= {"job_id", "index"} and sig.args == ()


def test_notes_level_on_summary_queue_then_summary_of_that_level() -> None:
    canvas = notes_canvas(app, "job5", 2, [(0, 3), (3, 7), (7, 9)])
    assert isinstance(canvas, _chord) and isinstance(canvas.tasks, group | tuple | list)
    header = list(canvas.tasks)
    assert [t.task for t in header] == ["maie.partial_notes"] * 3
    assert [(t.kwargs["start"], t.kwargs["end"]) for t in header] == [(0, 3), (3, 7), (7, 9)]
    assert [t.kwargs["group"] for t in header] == [0, 1, 2]
    assert {t.kwargs["level"] for t in header} == {2}
    assert [t.options["task_id"] for t in header] == [f"job5-notes-2-{g}" for g in range(3)]
    assert queue_of("maie.partial_notes") == "summary"
    assert canvas.body.task == "maie.summarize"
    assert canvas.body.kwargs == {"job_id": "job5", "level": 2}
    assert canvas.body.options["task_id"] == "job5-summary-2"


def test_every_task_is_routed() -> None:
    import maie.asr_tasks  # noqa: F401  (registers the recognition tasks)
    import maie.tasks  # noqa: F401  (registers the tasks)

    ours = {name for name in app.tasks if name.startswith("maie.")}
    assert ours == set(TASK_ROUTES)


def test_audio_job_starts_on_asr_then_parts_in_parallel_then_join() -> None:
    start = audio_canvas(app, "job6")
    assert start.task == "maie.asr_split" and start.options["task_id"] == "job6"
    canvas = asr_parts_canvas(app, "job6", 3)
    assert isinstance(canvas, _chord)
    header = list(canvas.tasks)
    assert [t.task for t in header] == ["maie.asr_part"] * 3
    assert [t.options["task_id"] for t in header] == [asr_part_task_id("job6", p) for p in range(3)]
    assert [t.kwargs for t in header] == [{"job_id": "job6", "index": p} for p in range(3)]
    # The join keeps the job's id: it replaces itself with the text canvas, whose last task has it too.
    assert canvas.body.task == "maie.asr_join" and canvas.body.options["task_id"] == "job6"
    assert {queue_of(t) for t in ("maie.asr_split", "maie.asr_part", "maie.asr_join")} == {"asr"}


def test_a_short_job_goes_to_the_short_lanes_and_a_long_one_to_the_queues() -> None:
    short = job_canvas(app, "job7", 2, ["enhance", "summary"], short=True)
    assert {t.options["queue"] for t in short.tasks} == {"enhance.short"}
    assert short.body.options["queue"] == "summary.short"
    only = job_canvas(app, "job8", 1, ["enhance"], short=True)
    assert only.body.task == "maie.assemble" and only.body.options["queue"] == "summary.short"
    long = job_canvas(app, "job9", 30, ["enhance", "summary"])
    assert {t.options["queue"] for t in long.tasks} == {"enhance"} and long.body.options["queue"] == "summary"


def test_a_job_is_short_up_to_short_job_max_chunks() -> None:
    s = load_settings(env_file=None, short_job_max_chunks=4)
    assert [is_short(n, s) for n in (1, 4, 5)] == [True, True, False]
    assert not is_short(1, load_settings(env_file=None, short_job_max_chunks=0))  # lanes off
    assert with_lanes(["enhance", "asr"]) == ["enhance", "enhance.short", "asr"]
    assert pool_of("summary.short") == "summary" and pool_of("asr") == "asr"
