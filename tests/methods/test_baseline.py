from rlvr_cli.types import MethodOutput
from tests.methods.test_registry import build_from_yaml, ctx, policy_batch, synthetic_batch


def test_baseline_changes_nothing():
    method = build_from_yaml("baseline")
    batch = synthetic_batch()
    assert method.prepare(batch, ctx()) == {} and batch.method == {}
    assert method.loss(policy_batch(batch)) == MethodOutput()
    assert method.clip_overrides == {} and method.state_dict() == {}
