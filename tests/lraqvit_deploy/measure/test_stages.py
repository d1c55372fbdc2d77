"""lraqvit_deploy.measure.stages: the stage timings compress and build carry."""
import time

from lraqvit_deploy.measure.stages import recording, rounded, stage


def test_stages_nest_and_count_once_per_name():
    with stage("free"):  # no recording: nothing kept, nothing fails
        pass
    with recording() as outer:
        with stage("a"):
            time.sleep(0.01)
            with stage("a"):  # the same name inside itself: counted once (the outermost)
                time.sleep(0.01)
            with recording() as inner, stage("b"):
                time.sleep(0.01)
    assert outer["a"]["calls"] == 1 and outer["a"]["seconds"] >= 0.03
    assert outer["b"]["calls"] == 1 and inner == {"b": outer["b"]}  # every active recording sees a stage
    assert "free" not in outer
    assert rounded({"a": {"seconds": 0.123456, "calls": 1}}) == {"a": {"seconds": 0.123, "calls": 1}}


def test_a_failing_stage_is_still_timed_and_the_recording_ends():
    with recording() as times:
        try:
            with stage("boom"):
                raise ValueError("x")
        except ValueError:
            pass
    assert times["boom"]["calls"] == 1
    with stage("after"):  # the recording is over: not collected
        pass
    assert "after" not in times
