"""Sample n responses per problem and grade them with the training verifier."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from rlvr_cli.rewards import MathGrader
from rlvr_cli.rollout.generate import generate_rollouts
from rlvr_cli.types import Prompt


@dataclass
class Sample:
    problem_id: str
    sample_index: int
    text: str
    extracted: str | None
    answer: str
    correct: bool
    status: str
    length: int
    truncated: bool

    def to_json(self) -> dict:
        return asdict(self)


def sample_and_grade(
    model, tokenizer, prompts: list[Prompt], grader: MathGrader, n: int, temperature: float, top_p: float,
    max_new_tokens: int, batch_size: int = 64, prompts_per_chunk: int | None = None, on_chunk=None,
) -> list[Sample]:
    """n samples for each prompt, graded. Prompts are processed in chunks so a progress callback
    (``on_chunk(done_prompts)``) can report an ETA on long benchmarks."""
    chunk = prompts_per_chunk or max(1, batch_size // max(1, n))
    samples: list[Sample] = []
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        ro = generate_rollouts(model, tokenizer, part, n, max_new_tokens, temperature, top_p, batch_size)
        answers = [part[g].answer for g in ro.group_ids.tolist()]
        grades = grader.grade(ro.texts, answers)
        lengths = ro.response_mask.sum(-1).tolist()
        for i, (g, grade) in enumerate(zip(ro.group_ids.tolist(), grades)):
            samples.append(Sample(
                problem_id=part[g].id, sample_index=i % n, text=ro.texts[i], extracted=grade.extracted,
                answer=part[g].answer, correct=grade.score > 0, status=grade.status, length=int(lengths[i]),
                truncated=bool(ro.truncated[i]),
            ))
        if on_chunk is not None:
            on_chunk(min(len(prompts), start + chunk))
    return samples
