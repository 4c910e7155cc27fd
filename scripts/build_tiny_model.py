#!/usr/bin/env python
"""Build a shipped tiny policy: a Qwen2-architecture causal LM for a generated task, trained from
scratch on this CPU, offline. ``--task arith`` (the default) builds the embedded default for the
chained arithmetic of ``rlvr_cli.data.synthetic``; ``--task countdown`` builds the entropy lab's
policy for Countdown (``rlvr_cli.data.countdown``, ``make lab-model``).

Steps: (a) byte-level BPE tokenizer (digits split one per token) trained on synthetic text, wrapped
as a transformers fast tokenizer with a ChatML chat template; (b) a ~1M-parameter ``Qwen2ForCausalLM``;
(c) a short supervised warm start on the train split (loss on response tokens only); (d) stopped
early (step 1300 of a 1500-step cosine schedule) so the model is only partly competent under
sampling: it knows the format and the method but slips on digits (the RL stage has room to improve it);
(e) saved with ``save_pretrained`` to ``rlvr_cli/assets/tiny_arith`` with a ``build_info.json``.

Countdown has many valid answers per problem: each warm-start example is a problem with one of its
solutions drawn afresh, in one of its written forms (``countdown.solution_forms``: the step order and the
operand order of + and * in the box), so the model learns the spread over solutions and
starts RL with real uncertainty (the token entropy, measured on sampled responses, is in
``build_info.json``).

The defaults reproduce the shipped models (about 5 minutes each on 2 otherwise idle CPU cores; far
longer when other torch jobs share the cores):

    python scripts/build_tiny_model.py                 # -> rlvr_cli/assets/tiny_arith
    python scripts/build_tiny_model.py --task countdown  # -> rlvr_cli/assets/tiny_countdown
    python scripts/build_tiny_model.py --eval-every 100 --out /tmp/tiny   # watch the accuracy curve
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rlvr_cli.data.countdown import countdown_split, solution_forms  # noqa: E402
from rlvr_cli.data.synthetic import arith_split  # noqa: E402
from rlvr_cli.rewards.countdown import check as countdown_check  # noqa: E402
from rlvr_cli.rewards.countdown import parse_gold  # noqa: E402

# what differs by task: the generator's parameters and the SFT length (None = the shared default)
TASK_DEFAULTS = {
    "arith": {"out": "tiny_arith", "n_train": 40000, "steps": 1300, "schedule_steps": 1500, "max_new_tokens": 64},
    "countdown": {"out": "tiny_countdown", "n_train": 2000, "steps": 2000, "schedule_steps": 2000, "max_new_tokens": 48},
}

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
# Same shape as Qwen's template (without its default system prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="arith",
                   help="arith: the embedded default; countdown: the entropy lab")
    p.add_argument("--out", default=None, help="output folder (default rlvr_cli/assets/tiny_<task>)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("task (arith)")
    g.add_argument("--min-ops", type=int, default=2)
    g.add_argument("--max-ops", type=int, default=3)
    g.add_argument("--max-operand", type=int, default=20)
    g = p.add_argument_group("task (countdown: keep equal to conf/data/countdown.yaml)")
    g.add_argument("--min-numbers", type=int, default=3, help="numbers per problem: from this many")
    g.add_argument("--max-numbers", type=int, default=3, help="numbers per problem: to this many")
    g.add_argument("--max-number", type=int, default=9)
    g.add_argument("--max-target", type=int, default=40)
    g = p.add_argument_group("data")
    g.add_argument("--n-train", type=int, default=None, help="distinct train problems for SFT (arith 40000, countdown 2000)")
    g.add_argument("--n-tokenizer", type=int, default=5000, help="train problems the tokenizer is trained on")
    g = p.add_argument_group("model")
    g.add_argument("--vocab-size", type=int, default=512, help="BPE target (stops earlier when merges run out)")
    g.add_argument("--hidden", type=int, default=128)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=2)
    g.add_argument("--intermediate", type=int, default=512)
    g.add_argument("--max-positions", type=int, default=512)
    g = p.add_argument_group("supervised warm start")
    g.add_argument("--steps", type=int, default=None, help="SFT steps actually taken, the early stop (arith 1300, countdown 2000)")
    g.add_argument(
        "--schedule-steps", type=int, default=None,
        help="horizon of the warmup+cosine LR schedule (0: same as --steps); --steps < this stops mid-schedule",
    )
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--warmup", type=int, default=50)
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument(
        "--threads", type=int, default=2,
        help="torch threads; keep (threads x busy processes) <= cores: oversubscribed, torch on CPU runs ~50x slower",
    )
    g = p.add_argument_group("evaluation")
    g.add_argument("--n-test", type=int, default=200)
    g.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
    g.add_argument("--eval-batch", type=int, default=100)
    g.add_argument("--max-new-tokens", type=int, default=None, help="arith 64, countdown 48")
    g.add_argument(
        "--stop-at-sampled-acc", type=float, default=None,
        help="with --eval-every: stop SFT at the first evaluation whose sampled accuracy reaches this",
    )
    g.add_argument("--bench", action="store_true", help="also time generate on 64 prompts x 64 new tokens")
    args = p.parse_args(argv)
    for key, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, key) is None:
            setattr(args, key, str(REPO / "rlvr_cli" / "assets" / value) if key == "out" else value)
    return args


def task_rows(args, split: str, n: int) -> tuple[list[dict], dict]:
    """(rows, the generator's parameters) of the chosen task."""
    if args.task == "countdown":
        task = dict(seed=args.seed, min_numbers=args.min_numbers, max_numbers=args.max_numbers, max_number=args.max_number,
                    max_target=args.max_target)
        return countdown_split(split, n, **task), {"generator": "rlvr_cli.data.countdown.countdown_split", **task}
    task = dict(seed=args.seed, min_ops=args.min_ops, max_ops=args.max_ops, max_operand=args.max_operand)
    return arith_split(split, n, **task), {"generator": "rlvr_cli.data.synthetic.arith_split", **task}


def all_solutions(args, row: dict) -> list[str]:
    """The warm start's targets for one problem: every valid solution (countdown), else the one."""
    if args.task == "countdown":
        numbers, target = parse_gold(row["answer"])
        return list(solution_forms(tuple(numbers), target))
    return [row["solution"]]


# ----------------------------------------------------------------------------------------- (a)
def build_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits one per token, so every number tokenises the same way wherever it occurs.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )


def prompt_text(tokenizer, problem: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True)


def check_reload(out: Path, tokenizer, examples: list[tuple[list[int], int]]) -> None:
    """The saved tokenizer, loaded as every engine loads it (``AutoTokenizer``: for a ``qwen2`` config,
    transformers rebuilds Qwen2's own pre-tokenizer around the saved vocabulary), must give the ids the
    model was trained on; a custom pre-tokenizer would silently not survive the reload."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(out, local_files_only=True)
    for ids, _ in examples:
        text = tokenizer.decode(ids)
        if loaded(text, add_special_tokens=False)["input_ids"] != ids:
            raise SystemExit(f"the saved tokenizer does not reload to the training ids for {text!r}")


# ----------------------------------------------------------------------------------------- (b)
def build_model(args, tokenizer):
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    pad_id, eos_id = tokenizer.convert_tokens_to_ids(PAD), tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_positions,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        use_sliding_window=False,
        max_window_layers=args.layers,
        bos_token_id=pad_id,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        dtype="float32",
    )
    torch.manual_seed(args.seed)
    model = Qwen2ForCausalLM(config).float()
    # Plain ancestral sampling by default (the RL policy's own distribution): transformers fills unset fields
    # from GenerationConfig._get_default_generation_params(), which means top_k=50 and max_length=20.
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, pad_token_id=pad_id, eos_token_id=eos_id,
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens,
    )
    return model


# ----------------------------------------------------------------------------------------- (c)
def encode_sft(tokenizer, rows: list[dict], targets: list[list[str]]) -> list[list[tuple[list[int], int]]]:
    """Per row, one (ids, n_prompt) per target solution: chat prompt + solution + <|im_end|>."""
    p_ids = tokenizer([prompt_text(tokenizer, r["problem"]) for r in rows], add_special_tokens=False)["input_ids"]
    flat = tokenizer([t + IM_END for ts in targets for t in ts], add_special_tokens=False)["input_ids"]
    out, k = [], 0
    for p, ts in zip(p_ids, targets):
        out.append([(p + r, len(p)) for r in flat[k : k + len(ts)]])
        k += len(ts)
    return out


def collate(examples, pad_id: int):
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(examples):  # right padding for training
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, attn, labels


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    horizon = args.schedule_steps or args.steps
    t = (step - args.warmup) / max(1, horizon - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ----------------------------------------------------------------------------------------- (d)
def boxed_answer(text: str) -> str | None:
    found = _BOXED.findall(text)
    return found[-1].strip() if found else None


def is_correct(text: str, answer: str) -> bool:
    got = boxed_answer(text)
    if got is None:
        return False
    if answer.startswith("{"):  # countdown: any expression over the numbers that reaches the target
        numbers, target = parse_gold(answer)
        return countdown_check(got, numbers, target).reason == "correct"
    try:
        return int(got) == int(answer)
    except ValueError:
        return False


@torch.no_grad()
def generate(model, tokenizer, problems: list[str], *, sample: bool, max_new_tokens: int, batch: int, seed: int):
    """Decoded responses (special tokens dropped), their token counts (incl. the eos) and the mean
    per-token entropy of the sampling distribution over the response tokens (nats)."""
    model.eval()
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts, lengths, ent_sum, ent_n = [], [], 0.0, 0
    torch.manual_seed(seed)
    for i in range(0, len(problems), batch):
        enc = tokenizer([prompt_text(tokenizer, p) for p in problems[i : i + batch]], return_tensors="pt",
                        padding=True, add_special_tokens=False)
        kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0) if sample else dict(do_sample=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                             output_logits=True, return_dict_in_generate=True, **kw)
        out = gen.sequences
        resp = out[:, enc["input_ids"].shape[1] :]
        logp = torch.stack(gen.logits, 1).float().log_softmax(-1)  # [B, T, V] (tiny V)
        entropy = -(logp.exp() * logp).sum(-1)  # [B, T]
        for b, row in enumerate(resp.tolist()):
            n = len(row)
            if eos_id in row:
                n = row.index(eos_id) + 1
            ent_sum += float(entropy[b, :n].sum())
            ent_n += n
            lengths.append(n)
            texts.append(tokenizer.decode(row[:n], skip_special_tokens=True))
    model.train()
    return texts, lengths, ent_sum / max(ent_n, 1)


def evaluate(model, tokenizer, test_rows, args, tag: str = "") -> dict:
    problems = [r["problem"] for r in test_rows]
    res = {}
    t0 = time.time()
    for name, sample in (("sampled", True), ("greedy", False)):
        texts, lengths, entropy = generate(model, tokenizer, problems, sample=sample,
                                           max_new_tokens=args.max_new_tokens, batch=args.eval_batch, seed=args.seed + 1)
        res[f"{name}_entropy"] = entropy
        res[f"{name}_acc"] = sum(is_correct(t, r["answer"]) for t, r in zip(texts, test_rows)) / len(test_rows)
        res[f"{name}_mean_len"] = sum(lengths) / len(lengths)
        res[f"{name}_truncated"] = sum(1 for t, n in zip(texts, lengths) if n == args.max_new_tokens) / len(lengths)
        res[f"{name}_examples"] = texts[:3]
    print(
        f"[eval{tag}] sampled acc {res['sampled_acc']:.3f} (len {res['sampled_mean_len']:.1f}, "
        f"entropy {res['sampled_entropy']:.3f} nats/token) | "
        f"greedy acc {res['greedy_acc']:.3f} (len {res['greedy_mean_len']:.1f}) | {time.time() - t0:.1f}s",
        flush=True,
    )
    return res


def bench_generate(model, tokenizer, test_rows, args) -> dict:
    problems = [r["problem"] for r in test_rows[:64]]
    enc = tokenizer([prompt_text(tokenizer, p) for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    model.eval()
    with torch.no_grad():
        # min_new_tokens forces exactly 64 new tokens per sequence: a fixed amount of work to time.
        model.generate(**enc, max_new_tokens=4, do_sample=True, top_k=0)  # warm-up
        t0 = time.time()
        out = model.generate(**enc, max_new_tokens=64, min_new_tokens=64, do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        dt = time.time() - t0
    model.train()
    n_new = (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    r = {"prompts": 64, "new_tokens_each": 64, "seconds": dt, "tokens_per_s": n_new / dt,
         "prompt_tokens": int(enc["input_ids"].shape[1])}
    print(f"[bench] generate 64 prompts x 64 new tokens: {dt:.2f}s, {r['tokens_per_s']:.0f} new tokens/s", flush=True)
    return r


# ----------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    train_rows, task = task_rows(args, "train", args.n_train)
    test_rows, _ = task_rows(args, "test", args.n_test)

    # (a) tokenizer: trained on problems, solutions and the chat scaffolding
    tok_rows = train_rows[: args.n_tokenizer]
    corpus = [r["problem"] for r in tok_rows] + [r["solution"] for r in tok_rows] + ["user\n", "assistant\n", "system\n"] * 50
    tokenizer = build_tokenizer(corpus, args.vocab_size)
    print(f"[tokenizer] vocab {len(tokenizer)}", flush=True)

    # (b) model
    model = build_model(args, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[model] Qwen2ForCausalLM {n_params:,} parameters ({n_params / 1e6:.2f}M)", flush=True)

    # (c) supervised warm start
    data = encode_sft(tokenizer, train_rows, [all_solutions(args, r) for r in train_rows])
    resp_lens = sorted(len(ids) - n for paths in data for ids, n in paths)
    print(f"[data] {len(data)} train problems, {len(resp_lens)} solutions; response tokens median "
          f"{resp_lens[len(resp_lens) // 2]}, max {resp_lens[-1]}; total tokens max "
          f"{max(len(i) for paths in data for i, _ in paths)}", flush=True)
    pick = random.Random(args.seed + 1)  # which solution of a problem each example teaches (countdown)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    order = list(range(len(data)))
    random.Random(args.seed).shuffle(order)
    pad_id = tokenizer.pad_token_id
    model.train()
    history, stopped_at, cursor, t_sft = [], args.steps, 0, time.time()
    for step in range(args.steps):
        if cursor + args.batch_size > len(order):
            random.Random(args.seed + step).shuffle(order)
            cursor = 0
        batch = [paths[pick.randrange(len(paths))] for paths in (data[j] for j in order[cursor : cursor + args.batch_size])]
        cursor += args.batch_size
        input_ids, attn, labels = collate(batch, pad_id)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, args)
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"[sft] step {step:5d} loss {loss.item():.4f} lr {lr_at(step, args):.2e} "
                  f"{time.time() - t_sft:.0f}s", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            r = evaluate(model, tokenizer, test_rows, args, tag=f" step {step + 1}")
            history.append({"step": step + 1, "loss": loss.item(), "sampled_acc": r["sampled_acc"], "greedy_acc": r["greedy_acc"]})
            if args.stop_at_sampled_acc is not None and r["sampled_acc"] >= args.stop_at_sampled_acc:
                stopped_at = step + 1
                print(f"[sft] stopping early at step {stopped_at}", flush=True)
                break
    sft_seconds = time.time() - t_sft

    # (d) final evaluation
    final = evaluate(model, tokenizer, test_rows, args, tag=" final")
    for t in final["sampled_examples"][:2]:
        print("   sample:", repr(t))
    bench = bench_generate(model, tokenizer, test_rows, args) if args.bench else None

    # (e) save
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    check_reload(out, tokenizer, [t for paths in data[:50] for t in paths[:4]])
    info = {
        "description": f"Tiny Qwen2 policy for the generated {args.task} task ({task['generator']}), "
                       "built by scripts/build_tiny_model.py: partly competent by design.",
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "seed": args.seed,
        "task": task,
        "n_params": n_params,
        "tokenizer_vocab_size": len(tokenizer),
        "sft_steps": stopped_at,
        "sft_seconds": round(sft_seconds, 1),
        "eval": {
            "n_test": len(test_rows),
            "max_new_tokens": args.max_new_tokens,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "top_k": 0},
            "sampled_acc": final["sampled_acc"],
            "greedy_acc": final["greedy_acc"],
            "sampled_token_entropy": round(final["sampled_entropy"], 4),
            "sampled_mean_response_tokens": round(final["sampled_mean_len"], 2),
            "greedy_mean_response_tokens": round(final["greedy_mean_len"], 2),
        },
        "history": history,
        "bench": bench,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "tokenizers": __import__("tokenizers").__version__, "python": platform.python_version()},
        "date": _dt.date.today().isoformat(),
        "build_seconds": round(time.time() - t_start, 1),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"[done] saved to {out} ({size / 1e6:.2f} MB) in {time.time() - t_start:.0f}s | "
          f"sampled acc {final['sampled_acc']:.3f} | greedy acc {final['greedy_acc']:.3f}", flush=True)
    return info


if __name__ == "__main__":
    main()
