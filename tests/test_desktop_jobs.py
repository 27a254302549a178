"""The Qt job adapter and the job panel, through real widgets and a real JobRunner."""

import time

import pytest
from PySide6.QtCore import QTimer, Qt

from core.errors import AppError
from core.jobs import JobRunner
from desktop.jobs_qt import COL_MESSAGE, COL_STATUS, JobPanel, QtJobs


@pytest.fixture
def jobs(qtbot):
    runner = JobRunner()
    adapter = QtJobs(runner)
    panel = JobPanel(adapter)
    qtbot.addWidget(panel)
    panel.resize(900, 200)
    panel.show()
    yield adapter, panel
    adapter.shutdown(timeout=5)


def counting_job(params, ctx):
    for step in range(params["steps"]):
        ctx.check_cancelled()
        time.sleep(params["sleep"])
        ctx.progress(step + 1, params["steps"], f"step {step + 1}")
    return "done"


def test_signals_arrive_on_gui_thread_and_panel_shows_progress(jobs, qtbot):
    adapter, panel = jobs
    seen = []
    adapter.progress.connect(lambda h, step, total, msg, prev: seen.append(step))
    with qtbot.waitSignal(adapter.finished, timeout=5000) as blocker:
        handle = adapter.submit(counting_job, {"steps": 5, "sleep": 0.01}, kind="test", title="Count")
    assert blocker.args[0] is handle and handle.result == "done"
    assert seen and seen[-1] == 5
    item = panel.item_for(handle.id)
    assert item.text(COL_STATUS) == "Done"
    bar = panel.progress_bar(handle.id)
    assert bar.value() == bar.maximum() == 5
    assert panel.cancel_button(handle.id) is None


def test_cancel_button_stops_a_running_job_within_one_step(jobs, qtbot):
    adapter, panel = jobs
    handle = adapter.submit(counting_job, {"steps": 1000, "sleep": 0.02}, kind="test", title="Long")
    qtbot.waitUntil(lambda: handle.step >= 3, timeout=5000)
    button = panel.cancel_button(handle.id)
    assert button.isEnabled()
    with qtbot.waitSignal(adapter.cancelled, timeout=5000):
        qtbot.mouseClick(button, Qt.LeftButton)
        step_at_click = handle.step
    assert handle.status == "cancelled"
    assert handle.step - step_at_click <= 1
    assert panel.item_for(handle.id).text(COL_STATUS) == "Cancelled"
    assert panel.cancel_button(handle.id) is None  # no Cancel on a finished job


def test_failing_job_shows_its_message_not_a_traceback(jobs, qtbot):
    adapter, panel = jobs

    def broken(params, ctx):
        raise AppError("The model folder has no config.json.", "Choose a Hugging Face model folder.")

    def crashing(params, ctx):
        return {}["missing"]

    with qtbot.waitSignal(adapter.failed, timeout=5000):
        first = adapter.submit(broken, kind="test", title="Load model")
    with qtbot.waitSignal(adapter.failed, timeout=5000):
        second = adapter.submit(crashing, kind="test", title="Crash")
    item = panel.item_for(first.id)
    assert item.text(COL_STATUS) == "Failed"
    assert item.text(COL_MESSAGE) == "The model folder has no config.json."
    assert "Hugging Face" in item.toolTip(COL_MESSAGE)
    text = panel.item_for(second.id).text(COL_MESSAGE)
    assert "KeyError" in text and "Traceback" not in text and "File " not in text


def test_gui_event_loop_never_stalls_during_cpu_heavy_job(jobs, qtbot):
    adapter, panel = jobs

    def busy(params, ctx):  # pure Python, holds the GIL as much as it can
        end = time.perf_counter() + params["seconds"]
        step = 0
        while time.perf_counter() < end:
            total = 0
            for i in range(20000):
                total += i * i % 7
            step += 1
            ctx.progress(step, 0, f"chunk {step}")
            ctx.check_cancelled()
        return step

    def measure() -> float:
        ticks = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        handle = adapter.submit(busy, {"seconds": 2.0}, kind="test", title="Busy")
        timer.start()
        qtbot.waitUntil(lambda: handle.status == "done", timeout=10000)
        timer.stop()
        assert len(ticks) > 50
        return max(b - a for a, b in zip(ticks, ticks[1:]))

    # The 2 CPU cores are shared with other work; a stall caused by the job (the GIL) shows up in
    # every attempt, one caused by the OS not scheduling us at all does not: up to 3 attempts.
    worst = []
    for _attempt in range(3):
        worst.append(measure())
        if worst[-1] < 0.1:
            break
    assert worst[-1] < 0.1, f"event loop stalled {[round(w * 1000) for w in worst]} ms"


def test_queued_job_cancelled_before_start_and_clear_finished(jobs, qtbot):
    adapter, panel = jobs
    first = adapter.submit(counting_job, {"steps": 20, "sleep": 0.01}, kind="test", title="First")
    second = adapter.submit(counting_job, {"steps": 5, "sleep": 0.01}, kind="test", title="Second")
    qtbot.waitUntil(lambda: panel.item_for(second.id) is not None)
    qtbot.mouseClick(panel.cancel_button(second.id), Qt.LeftButton)
    qtbot.waitUntil(lambda: first.status == "done" and second.status == "cancelled", timeout=5000)
    qtbot.waitUntil(lambda: panel.item_for(second.id).text(COL_STATUS) == "Cancelled")
    assert second.started_at is None
    panel.clear_finished()
    assert panel.tree.topLevelItemCount() == 0
    assert panel.empty_label.isVisible()


def test_empty_panel_shows_only_its_explanation(qtbot):
    panel = JobPanel()
    qtbot.addWidget(panel)
    panel.show()
    assert panel.empty_label.isVisible()
    assert not panel.tree.isVisible() and not panel.clear_button.isVisible()


def test_panel_final_states_match_core():
    import core.jobs
    import desktop.jobs_qt

    assert set(desktop.jobs_qt.FINAL_STATES) == set(core.jobs.FINAL_STATES)
