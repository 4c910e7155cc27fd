"""Grader throughput on a MATH-500-style mix, and the worst case on adversarial answers (2 workers).

    .venv/bin/python benchmarks/grader_throughput.py [--data ../shared/data/math500.jsonl] [--repeats 8]
                                                     [--out runs/benchmarks/grader_throughput.json]

The mix: for every MATH-500 gold answer, four predictions as a policy writes them: the gold itself,
a respelling (``\\dfrac``, spaces, ``$...$``), a wrong value (the gold with a digit changed, or ``0``)
and, for numeric golds, a decimal or fraction form. Each is a full response (``... \\boxed{pred}``)
graded by ``MathGrader.grade`` as in training: extraction, fast path, then math-verify in the worker
processes. Throughput is answers per second over ``--repeats`` passes of the whole mix (identical
pairs within one call are compared once, as in a real batch, so each pass is its own call per chunk
of 128, the size of a GRPO step).

Adversarial inputs (huge powers, towers, factorials, deep nesting, 100 kB strings) are graded one at
a time; the figure is each one's wall time, which must stay under ``timeout_s + 0.5 s``.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rlvr_cli.rewards import MathGrader
from rlvr_cli.rewards.fast import as_number, fast_compare

ADVERSARIAL = {
    "huge power": (r"10^{10^{10^{10}}}", "5"),
    "power tower": (r"9^{9^{9^{9^{9}}}}", r"9^{9^{9}}"),
    "huge factorial": ("100000000!", "5"),
    "deep nesting": ("(" * 2000 + "1" + ")" * 2000, "1"),
    "deep fractions": (r"\frac{1}{" * 300 + "2" + "}" * 300, "2"),
    "100 kB digits": ("1" * 100_000, "1"),
    "100 kB expression": ("+".join(["x^2"] * 25_000), "x"),
    "100 kB text": (r"\text{" + "a" * 100_000 + "}", "5"),
}


def mix(rows: list[dict], seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for row in rows:
        gold = str(row["answer"])
        pairs.append((gold, gold))
        respelled = gold.replace("\\frac", "\\dfrac").replace(",", ", ")
        pairs.append(("$" + respelled + "$", gold))
        digits = [i for i, c in enumerate(gold) if c.isdigit()]
        if digits:
            i = rng.choice(digits)
            wrong = gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1:]
        else:
            wrong = "0"
        pairs.append((wrong, gold))
        number = as_number(gold)
        if number is not None and not number.percent:
            alt = f"{float(number.value):.12g}" if number.value.denominator != 1 else rf"\frac{{{2 * number.value}}}{{2}}"
            pairs.append((alt, gold))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math500.jsonl"))
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", default="runs/benchmarks/grader_throughput.json")
    args = ap.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    pairs = mix(rows)
    responses = [f"Thus the answer is $\\boxed{{{p}}}$." for p, _ in pairs]
    golds = [g for _, g in pairs]
    out: dict = {"answers": len(pairs), "workers": args.workers, "timeout_s": args.timeout, "repeats": args.repeats}
    with MathGrader(timeout_s=args.timeout, num_workers=args.workers) as grader:
        grader.grade(responses[:8], golds[:8])  # start the workers (not timed)
        statuses: dict[str, int] = {}
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for start in range(0, len(pairs), 128):
                for g in grader.grade(responses[start:start + 128], golds[start:start + 128]):
                    statuses[g.status] = statuses.get(g.status, 0) + 1
        wall = time.perf_counter() - t0
        fast = sum(fast_compare(p, g) is not None for p, g in pairs)  # settled without a worker
        out.update(answers_per_s=len(pairs) * args.repeats / wall, wall_s=wall,
                   statuses={k: v // args.repeats for k, v in sorted(statuses.items())}, fast_path_share=fast / len(pairs))
        print(f"MATH-500 mix: {len(pairs)} answers x {args.repeats}: {out['answers_per_s']:.0f} answers/s "
              f"on {args.workers} workers ({wall:.1f} s); statuses per pass {out['statuses']}")
        worst = {}
        for name, (pred, gold) in ADVERSARIAL.items():
            t = time.perf_counter()
            grade = grader.grade_one(f"\\boxed{{{pred}}}", gold)
            worst[name] = {"wall_s": time.perf_counter() - t, "status": grade.status}
            print(f"  {name:<18} {worst[name]['wall_s']:6.2f} s  {grade.status}")
        out["adversarial"] = worst
        out["adversarial_max_s"] = max(w["wall_s"] for w in worst.values())
        out["adversarial_bound_s"] = args.timeout + 0.5
        print(f"worst case {out['adversarial_max_s']:.2f} s (bound: timeout {args.timeout} s + 0.5 s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
