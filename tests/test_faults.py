"""The fault suite (benchmarks/faults.py): its classifier, and every fault of its catalogue as a test.

A fault passes when its outcome is correct or a clear error; an ugly error or a silently wrong result fails it.
"""

import importlib.util
import sys
import types

import pytest
from conftest import REPO

pytestmark = pytest.mark.workflow


spec = importlib.util.spec_from_file_location("faults", REPO / "benchmarks" / "faults.py")
faults = importlib.util.module_from_spec(spec)
sys.modules["faults"] = faults  # dataclasses look their module up
spec.loader.exec_module(faults)

Observation, classify = faults.Observation, faults.classify
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nValueError: bad prompt\n'


def test_success_with_the_right_result_is_correct():
    assert classify(Observation(failed=False, right=True)) == (faults.CORRECT, "same result as without the fault")


def test_success_with_a_wrong_result_is_silently_wrong():
    cls, line = classify(Observation(failed=False, right=False, detail="status ok, 0 J"))
    assert cls == faults.SILENT and line == "status ok, 0 J"


def test_success_that_overwrote_an_input_is_silently_wrong_even_with_the_right_number():
    assert classify(Observation(failed=False, right=True, damage="overwrote L64.npy"))[0] == faults.SILENT


def test_one_line_naming_the_file_is_a_clear_error():
    obs = Observation(failed=True, message="ctxenergy: p.npy: holds 32 tokens; make it again\n", names=("p.npy",))
    assert classify(obs) == (faults.CLEAR, "ctxenergy: p.npy: holds 32 tokens; make it again")


@pytest.mark.parametrize(
    "message, names",
    [
        (TRACEBACK, ()),  # a traceback
        ("ctxenergy: something is wrong\nand here is more\n", ()),  # more than one line from a command
        ("ctxenergy: something is wrong\n", ("p.npy",)),  # names neither the file nor the key
        ("ValueError: bad prompt\n", ()),  # one line, but not ours
        ("", ()),  # stopped without a word
        ("ctxenergy: x\nFailed validating 'type' in schema\nOn instance['generate_tokens']:\n", ()),  # a schema dump
    ],
)
def test_failures_that_are_not_one_clear_line_are_ugly(message, names):
    assert classify(Observation(failed=True, message=message, names=names))[0] == faults.UGLY


def test_a_traceback_is_reported_by_its_exception_line():
    assert classify(Observation(failed=True, message=TRACEBACK)) == (faults.UGLY, "ValueError: bad prompt")


def test_workflow_output_is_clear_when_it_holds_our_line_and_no_traceback():
    out = "Building DAG of jobs...\nctxenergy: config: engines[0] 'vlm' is not a known engine\nExiting.\n"
    obs = Observation(failed=True, message=out, channel="workflow", names=("vlm",))
    assert classify(obs) == (faults.CLEAR, "ctxenergy: config: engines[0] 'vlm' is not a known engine")
    assert classify(Observation(failed=True, message=out + TRACEBACK, channel="workflow"))[0] == faults.UGLY
    assert (
        classify(Observation(failed=True, message="LockException:\nDirectory cannot be locked.\n", channel="workflow"))[
            0
        ]
        == faults.UGLY
    )


def test_a_non_ok_cell_with_a_reason_is_a_clear_error():
    obs = Observation(failed=True, message="energy counter did not advance in window 0", channel="status")
    assert classify(obs)[0] == faults.CLEAR
    assert classify(Observation(failed=True, message="", channel="status"))[0] == faults.UGLY


def test_refusing_a_valid_input_and_leaving_damage_are_ugly():
    clear = "ctxenergy: config/x.yaml: 'models' is a required property\n"
    assert classify(Observation(failed=True, message=clear, must_succeed=True))[0] == faults.UGLY
    assert classify(Observation(failed=True, message=clear, damage="left .L64.parquet.tmp"))[0] == faults.UGLY


def test_an_ugly_error_out_of_reach_is_upstream_and_never_clear():
    fault = next(f for f in faults.FAULTS if f.upstream)
    ugly = faults.Fault(
        fault.id,
        fault.kind,
        fault.fault,
        fault.correct,
        lambda ctx: Observation(failed=True, message=TRACEBACK, channel="workflow"),
        upstream=fault.upstream,
    )
    outcome = faults.run_fault(ugly, types.SimpleNamespace(root=REPO / "no-such-folder"))
    assert outcome.cls == faults.UPSTREAM and fault.upstream in outcome.message
    counts = faults.counts([outcome])
    assert counts[faults.UPSTREAM] == 1 and counts[faults.CLEAR] == 0 and counts[faults.UGLY] == 0


def test_a_hang_is_ugly():
    assert classify(Observation(failed=True, timed_out=True, detail="snakemake did not end"))[0] == faults.UGLY


def test_the_catalogue_covers_the_issue():
    ids = [f.id for f in faults.FAULTS]
    assert len(ids) == len(set(ids)) >= 60
    assert sum(f.issue for f in faults.FAULTS) >= 11
    kinds = {f.kind for f in faults.FAULTS}
    assert {"config", "cli", "prompts", "cell-files", "telemetry", "workflow", "disk", "kill", "concurrency"} <= kinds


@pytest.fixture(scope="module")
def ctx():
    context = faults.Context()
    yield context
    context.close()


@pytest.mark.parametrize("fault", faults.FAULTS, ids=[f.id for f in faults.FAULTS])
def test_injected_fault(fault, ctx):
    outcome = faults.run_fault(fault, ctx)
    # an upstream fault stays what its entry says (a change in the tool that raises it shows here)
    allowed = (faults.UPSTREAM,) if fault.upstream else (faults.CORRECT, faults.CLEAR)
    assert outcome.cls in allowed, f"{fault.fault}: {outcome.cls}: {outcome.message}"
