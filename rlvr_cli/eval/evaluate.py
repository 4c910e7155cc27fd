"""Sample n responses per problem and grade them with the training verifier."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rlvr_cli.rewards import CountdownGrader, MathGrader
from rlvr_cli.rollout.generate import generate_rollouts
from rlvr_cli.rollout.stopping import StopCriteria
from rlvr_cli.types import Prompt, Rollouts

# prompts -> (their n responses each, prompt-major; per-response extra statistics {name: [N] values})
Generate = Callable[[list[Prompt]], tuple[Rollouts, dict[str, list[float]]]]


@dataclass
class Sample:
    problem_id: str
    sample_index: int
    text: str
    extracted: str | None
    answer: str
    correct: bool
    status: str
    length: int  # response tokens, EOS included
    truncated: bool  # no EOS within max_new_tokens
    extra: dict[str, float] = field(default_factory=dict)  # sampler statistics (e.g. extrapolated tokens)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def sample_and_grade(
    model, tokenizer, prompts: list[Prompt], grader: MathGrader | CountdownGrader, n: int, temperature: float, top_p: float,
    max_new_tokens: int, batch_size: int = 64, prompts_per_chunk: int | None = None, on_chunk=None,
    generate: Generate | None = None, max_prompt_len: int | None = None, stop: StopCriteria | None = None,
    extract=None,
) -> list[Sample]:
    """n samples for each prompt, graded.

    Prompts are processed in chunks of about ``batch_size`` sequences (prompts × n), so a progress
    callback (``on_chunk(done_prompts)``) can report an ETA on long benchmarks. ``generate`` replaces
    plain HF sampling (e.g. Δlog p extrapolation); it must return n responses per prompt, prompt-major.
    ``stop``: where responses end (default: the model's EOS), as in training. ``extract``: the answer
    forms to read (a benchmark's own), else the grader's. Each chunk is graded in the background
    (``grader.grade_async``) while the next one generates.
    """
    if generate is None:
        def generate(part: list[Prompt]) -> tuple[Rollouts, dict[str, list[float]]]:
            ro = generate_rollouts(model, tokenizer, part, n, max_new_tokens, temperature, top_p, batch_size, max_prompt_len,
                                   stop=stop)
            return ro, {}

    chunk = prompts_per_chunk or max(1, batch_size // max(1, n))
    samples: list[Sample] = []
    pending = None  # the previous chunk, being graded in the background while this one generates

    def collect(item) -> None:
        part, ro, extras, future, done = item
        grades = future.result()
        lengths = ro.response_mask.sum(-1).tolist()
        for i, (g, grade) in enumerate(zip(ro.group_ids.tolist(), grades)):
            samples.append(Sample(
                problem_id=part[g].id, sample_index=i % n, text=ro.texts[i], extracted=grade.extracted,
                answer=part[g].answer, correct=grade.score > 0, status=grade.status, length=int(lengths[i]),
                truncated=bool(ro.truncated[i]), extra={k: v[i] for k, v in extras.items()},
            ))
        if on_chunk is not None:
            on_chunk(done)

    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        ro, extras = generate(part)
        answers = [part[g].answer for g in ro.group_ids.tolist()]
        future = grader.grade_async(ro.texts, answers, extract)  # CPU work, overlapping the next chunk's generation
        if pending is not None:
            collect(pending)
        pending = (part, ro, extras, future, min(len(prompts), start + chunk))
    if pending is not None:
        collect(pending)
    return samples
