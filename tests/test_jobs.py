"""The job engine without Qt: progress throttling, cancel, failures, run rows in a real project."""

import threading
import time

import pytest

from core.errors import AppError
from core.jobs import PROGRESS_INTERVAL_S, JobRunner
from core.project import Project


class Recorder:
    """A listener keeping every event (they arrive on the worker thread)."""

    def __init__(self):
        self.events = []
        self._lock = threading.Lock()

    def __call__(self, event):
        with self._lock:
            self.events.append((event.type, event.job.id, event.step, event.total, event.message))

    def of(self, job, kind=None):
        with self._lock:
            return [e for e in self.events if e[1] == job.id and (kind is None or e[0] == kind)]


@pytest.fixture
def runner():
    r = JobRunner()
    yield r
    r.shutdown(timeout=5)


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "jobs.lienzo") as p:
        yield p


def test_progress_is_throttled_but_first_and_last_pass(runner):
    recorder = Recorder()
    runner.add_listener(recorder)
    total = 200_000

    def busy(params, ctx):
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < 0.5:  # half a second of very frequent reports
            ctx.progress(min(step, total - 1), total, "working")
            step += 1
        ctx.progress(total, total, "done")
        return step

    job = runner.submit(busy, kind="test")
    assert job.wait(10)
    calls = job.result
    progress = recorder.of(job, "progress")
    assert calls > 1000  # it really did report far more often than shown
    assert progress[0][2] == 0 and progress[-1][2] == total
    # ~0.5 s at one report per PROGRESS_INTERVAL_S, plus the first and the last
    assert len(progress) <= 0.6 / PROGRESS_INTERVAL_S + 2, len(progress)
    assert len(progress) >= 3
    assert [e[0] for e in recorder.of(job)][:2] == ["queued", "started"]
    assert recorder.of(job)[-1][0] == "finished"


def test_the_latest_preview_is_kept_when_its_report_is_throttled(runner):
    recorder = Recorder()
    runner.add_listener(recorder)

    def ends_in_a_burst(params, ctx):
        ctx.progress(5, 5, "trained", preview={"n": 1})
        ctx.progress(5, 5, "fitting", preview={"n": 2})  # the same last step again, at once
        ctx.progress(5, 5, "calibrating", preview={"n": 3})
        return None

    job = runner.submit(ends_in_a_burst, kind="test")
    assert job.wait(10)
    shown = [e for e in recorder.of(job, "progress")]
    assert len(shown) == 1  # the runner showed the first of the three
    assert job.last_preview == {"n": 3}


def test_repeated_first_step_reports_are_throttled_too(runner):
    recorder = Recorder()
    runner.add_listener(recorder)

    def stream(params, ctx):
        start = time.monotonic()
        while time.monotonic() - start < 0.3:  # e.g. streamed tokens with no known total
            ctx.progress(0, 0, "token")
        ctx.progress(1, 1, "done")

    job = runner.submit(stream, kind="test")
    assert job.wait(5)
    progress = recorder.of(job, "progress")
    assert len(progress) <= 0.4 / PROGRESS_INTERVAL_S + 2, len(progress)
    assert progress[-1][2:4] == (1, 1)


def test_cancel_stops_a_running_job_within_one_step(runner):
    done_steps = []
    reached = threading.Event()

    def steps(params, ctx):
        for i in range(1000):
            ctx.check_cancelled()
            done_steps.append(i)
            if i == 5:
                reached.set()
            ctx.progress(i, 1000)
            time.sleep(0.01)

    job = runner.submit(steps, kind="test")
    assert reached.wait(5)
    job.cancel()
    at_cancel = len(done_steps)
    assert job.wait(5)
    assert job.status == "cancelled" and job.error is None
    assert len(done_steps) <= at_cancel + 1


def test_cancel_of_a_queued_job_never_starts_it(runner, project):
    runner.project = project
    recorder = Recorder()
    runner.add_listener(recorder)
    release = threading.Event()
    started_second = threading.Event()

    def blocker(params, ctx):
        release.wait(5)

    first = runner.submit(blocker, kind="test")
    second = runner.submit(lambda p, c: started_second.set(), kind="test")
    second.cancel()
    release.set()
    assert second.wait(5) and first.wait(5)
    assert not started_second.is_set()
    assert second.status == "cancelled" and second.started_at is None
    assert [e[0] for e in recorder.of(second)] == ["queued", "cancelled"]
    assert project.get_run(second.run_id)["status"] == "cancelled"
    assert project.get_run(second.run_id)["started_at"] is None
    assert project.get_run(first.run_id)["status"] == "done"


def test_failures_are_recorded_with_their_message(runner, project):
    runner.project = project
    recorder = Recorder()
    runner.add_listener(recorder)

    def app_error(params, ctx):
        ctx.progress(1, 3, "loading")
        raise AppError("The model folder has no config.json.", "Choose a Hugging Face folder.")

    def bug(params, ctx):
        ctx.log("about to divide")
        return 1 / 0

    expected = runner.submit(app_error, {"model": "/m"}, kind="text.generate", title="Generate")
    unexpected = runner.submit(bug, kind="test", title="Divide")
    assert expected.wait(5) and unexpected.wait(5)

    assert expected.status == "failed"
    assert expected.error.message == "The model folder has no config.json."
    run = project.get_run(expected.run_id)
    assert run["status"] == "failed" and "no config.json" in run["log"]
    assert run["params"] == {"model": "/m"} and run["kind"] == "text.generate"
    assert run["started_at"] <= run["ended_at"]

    assert unexpected.status == "failed" and isinstance(unexpected.error, AppError)
    assert "ZeroDivisionError" in unexpected.error.message  # a sentence, not a traceback
    assert "Traceback" not in unexpected.error.message and unexpected.error.hint
    log = project.get_run(unexpected.run_id)["log"]
    assert "about to divide" in log and "Traceback" in log  # the details stay in the run log
    assert recorder.of(unexpected)[-1][0] == "failed"
    # Listeners get the job's own log lines, not the traceback nor the error (the "failed" event has it)
    assert [e[4] for e in recorder.of(unexpected, "log")] == ["about to divide"]
    assert recorder.of(expected, "log") == []


def test_headless_commands_print_progress_and_log_lines_on_stderr(capsys):
    from core.cli import run_job

    def job(params, ctx):
        ctx.progress(0, 2, "reading")
        ctx.log("skipped broken.png: not an image")
        ctx.progress(2, 2, "done")
        return "ok"

    assert run_job(job, {}, kind="demo").result == "ok"
    assert capsys.readouterr().err.splitlines() == [
        "demo: [0/2] reading", "demo: skipped broken.png: not an image", "demo: [2/2] done"]


def test_system_exit_in_a_job_does_not_kill_the_worker(runner):
    def exits(params, ctx):
        raise SystemExit(3)  # e.g. a library's command-line code called sys.exit()

    failed = runner.submit(exits, kind="test", title="Exit")
    after = runner.submit(lambda p, c: "still working", kind="test")
    assert failed.wait(5) and after.wait(5)
    assert failed.status == "failed" and "SystemExit" in failed.error.message
    assert after.result == "still working"


def test_done_job_records_metrics_and_times(runner, project):
    runner.project = project

    def train(params, ctx):
        assert ctx.project is project and ctx.run_id is not None
        assert project.get_run(ctx.run_id)["status"] == "running"
        ctx.metrics["loss"] = 0.25
        ctx.log("epoch 1")
        return params["epochs"] * 2

    job = runner.submit(train, {"epochs": 2}, kind="train")
    assert job.wait(5)
    assert job.status == "done" and job.result == 4
    run = project.get_run(job.run_id)
    assert run["status"] == "done" and run["metrics"] == {"loss": 0.25}
    assert run["log"] == "epoch 1"
    assert run["started_at"] == pytest.approx(job.started_at)
    assert run["ended_at"] == pytest.approx(job.finished_at)
    assert job.elapsed >= 0
    unrecorded = runner.submit(lambda p, c: None, kind="quiet", record=False)
    assert unrecorded.wait(5) and unrecorded.run_id is None
    assert [r["kind"] for r in project.list_runs()] == ["train"]


def test_a_broken_listener_does_not_stop_the_worker(runner):
    def broken(event):
        raise RuntimeError("listener bug")

    runner.add_listener(broken)
    job = runner.submit(lambda p, c: "ok", kind="test")
    assert job.wait(5) and job.result == "ok"
    runner.remove_listener(broken)


def test_shutdown_cancels_running_and_queued_jobs(project):
    runner = JobRunner(project)
    started = threading.Event()

    def long(params, ctx):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.01)

    running = runner.submit(long, kind="test")
    queued = runner.submit(long, kind="test")
    assert started.wait(5)
    runner.shutdown(timeout=5)
    assert not runner._worker.is_alive()
    assert running.status == queued.status == "cancelled"
    assert project.get_run(running.run_id)["status"] == "cancelled"
    assert project.get_run(queued.run_id)["status"] == "cancelled"
    with pytest.raises(AppError, match="shut down"):
        runner.submit(long, kind="test")


def test_jobs_of_a_crashed_session_are_interrupted_on_reopen(tmp_path):
    path = tmp_path / "crash.lienzo"
    project = Project.create(path)
    runner = JobRunner(project)
    gate = threading.Event()
    job = runner.submit(lambda p, c: gate.wait(5), kind="train")
    while project.get_run(job.run_id)["status"] != "running":
        time.sleep(0.01)
    # simulate the process dying: the file is closed without the job finishing
    project._conn.close()
    project._file_lock.release()
    project._closed = True
    gate.set()
    assert job.wait(5)  # its final update fails quietly on the closed project
    runner.shutdown(timeout=5)
    with Project.open(path) as reopened:
        assert reopened.get_run(job.run_id)["status"] == "interrupted"
