"""The per-operation profile: instructions named from a real trace, with their origin."""

import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from posenc_jax.op_profile import format_profile, instruction_sources, profile_ops, trace_op_seconds

HLO = "\n".join(
    [
        "  %ynn_fusion.75 = f32[4096,192]{1,0} fusion(%a, %b), kind=kCustom, calls=%c, "
        'metadata={op_name="jit(run_chunk)/while/body/closed_call/jvp()/dot_general" '
        "stack_frame_id=506}",
        "  ROOT %dot.332 = f32[128,4,32,16]{3,2,1,0} dot(%x, %y), "
        'metadata={op_name="jit(f)/transpose(jvp(bqhd,bkhd->bhqk))/dot_general"}',
        "  %parameter.1 = f32[8]{0} parameter(0)",
    ]
)


def test_instruction_sources_name_the_operation_and_shape():
    assert instruction_sources(HLO) == {
        "ynn_fusion.75": "jvp()/dot_general f32[4096,192]",
        "dot.332": "transpose(jvp(bqhd,bkhd->bhqk))/dot_general f32[128,4,32,16]",
    }


def test_trace_seconds_sum_each_instructions_events(tmp_path):
    events = [
        {"ph": "X", "name": "fusion.1", "dur": 1500.0, "args": {"hlo_op": "fusion.1"}},
        {"ph": "X", "name": "fusion.1", "dur": 500.0, "args": {"hlo_op": "fusion.1"}},
        {"ph": "X", "name": "end: fusion.1", "dur": 3.0, "args": {}},  # no hlo_op: not an op
        {"ph": "M", "name": "thread_name", "args": {"name": "python"}},
    ]
    trace = tmp_path / "perfetto_trace.json.gz"
    trace.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    assert trace_op_seconds(trace) == pytest.approx({"fusion.1": 2e-3})


def test_a_real_program_profiles_to_its_own_instructions():
    x = jnp.ones((256, 256))
    compiled = jax.jit(lambda a: jnp.tanh(a @ a) @ a).lower(x).compile()
    ops = profile_ops(compiled, lambda: compiled(x), repeats=2)
    assert ops and sum(op.share for op in ops) == pytest.approx(1.0)
    assert [op.seconds for op in ops] == sorted((op.seconds for op in ops), reverse=True)
    sources = instruction_sources(compiled.as_text())
    assert all(op.name in sources for op in ops)
    assert any("dot_general" in op.source for op in ops)
    assert format_profile(ops, top=1).count("\n") == 1
