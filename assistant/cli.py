"""``assistant <verb>``: the command line. Each verb is a thin function over the library.

User errors (bad settings, a missing model, a broken template) print one message to stderr and exit
with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from assistant.config import ENGINES, ConfigError, load_variant
from assistant.data import DataError
from assistant.errors import EXIT_USER_ERROR, USER_ERRORS

ENGINE_HELP = ("generation engine: auto (default: the variant's serving.engine, itself auto: llamacpp on the CPU "
               "for a base with a GGUF file, vllm on a GPU when installed, else transformers), transformers, "
               "llamacpp, openai (serving.url), vllm")


def _variant_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("variant")
    group.add_argument(
        "--variant",
        metavar="FILE",
        help="variant YAML file (base model, prompt, context, adapter, generation). "
        "Without it: the embedded base model, the plain prompt, no retrieval.",
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting of the variant, e.g. --set generation.max_new_tokens=64 "
        "--set context.top_k=5 (repeatable; values are read as YAML)",
    )
    group.add_argument("--base", help="shortcut for --set model.base=...: embedded name, hub id or local folder")
    group.add_argument(
        "--quantization", choices=["nf4", "none"], help="shortcut for --set model.quantization=...: 4-bit NF4 or none"
    )
    group.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="shortcut for --set model.device=...: where to run"
    )
    group.add_argument("--adapter", metavar="DIR", help="shortcut for --set model.adapter=...: LoRA adapter folder")
    group.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)


def _load(args: argparse.Namespace):
    overrides = list(args.overrides)
    for key, section in (("base", "model.base"), ("quantization", "model.quantization"),
                         ("device", "model.device"), ("adapter", "model.adapter")):
        value = getattr(args, key, None)
        if value is not None:
            overrides.append(f"{section}={json.dumps(value)}")
    return load_variant(args.variant, overrides)


def _history(args: argparse.Namespace, message: str) -> list[dict[str, str]]:
    history: list[dict[str, str]] = []
    if args.history:
        path = Path(args.history)
        try:
            history = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(history, list) and all({"role", "content"} <= set(m) for m in history)
        except (OSError, json.JSONDecodeError, AssertionError, TypeError) as exc:
            raise ConfigError(f"{path}: expected a JSON list of {{role, content}} messages ({exc})") from None
    return history + [{"role": "user", "content": message}]


def cmd_render(args: argparse.Namespace) -> int:
    from assistant.generate import Bot

    bot = Bot(_load(args))
    bot.check()
    prepared = bot.prepare(_history(args, args.message))
    tokenizer = bot.tokenizer
    print(f"# variant {bot.variant.name} ({bot.variant.variant_hash()}), template {bot.template.name} "
          f"({bot.template.content_hash})")
    print("\n## Messages")
    for m in prepared.messages:
        count = len(tokenizer(m["content"], add_special_tokens=False)["input_ids"])
        print(f"\n--- {m['role']} ({count} tokens)")
        print(m["content"])
    print("\n## Prompt text (after the tokenizer's chat template)\n")
    print(prepared.text)
    print("## Tokens")
    print(f"prompt: {len(prepared.input_ids)}  budget: {prepared.budget}  "
          f"reserved for the answer: {bot.variant.generation.max_new_tokens}  "
          f"history messages dropped: {prepared.dropped_messages}")
    if prepared.passages:
        print("passages: " + "; ".join(p.cite() for p in prepared.passages))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from assistant.generate import Bot

    bot = Bot(_load(args), args.engine)
    bot.check()
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting with {bot.variant.name}. /reset starts over, /quit or Ctrl-D ends.", file=sys.stderr)
    history: list[dict[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            break
        message = line.strip()
        if not message:
            continue
        if message == "/quit":
            break
        if message == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": message})
        prepared, stream = bot.start(history)
        pieces = []
        print("bot> " if interactive else "", end="", flush=True)
        for piece in stream:
            pieces.append(piece)
            print(piece, end="", flush=True)
        print()
        if prepared.passages and not args.no_sources:
            print("sources: " + "; ".join(p.cite() for p in prepared.passages), flush=True)
        history.append({"role": "assistant", "content": "".join(pieces).strip()})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from assistant.generate import Bot, end_of_turn_ids

    variant = _load(args)
    bot = Bot(variant, args.engine)
    base = bot.base
    params = sum(p.numel() for p in base.model.parameters())
    rows = {
        "variant": f"{variant.name} ({variant.variant_hash()})",
        "base": variant.model.base,
        "resolved": base.source.location,
        "device": base.device,
        "compute dtype": str(base.dtype).replace("torch.", ""),
        "quantization": base.quantization,
        "adapter": variant.model.adapter or "none",
        "parameters": f"{params / 1e6:.1f}M",
        "memory footprint": f"{base.memory_bytes() / 2**20:.1f} MiB",
        "context window": str(bot.context_window),
        "end of turn": ", ".join(base.tokenizer.convert_ids_to_tokens(end_of_turn_ids(base.tokenizer, base.model))),
        "engine": bot.engine_name,
        "template": variant.prompt.template,
        "retrieval": f"{variant.context.retriever} top {variant.context.top_k} over {variant.context.documents}"
        if variant.context.documents else "off",
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_variant(args: argparse.Namespace) -> int:
    from assistant.config import commented_yaml

    print(commented_yaml(_load(args)), end="")
    return 0


def _dotted_overrides(extra: list[str]) -> list[str]:
    """Turns ['--training.learning_rate', '1e-4', '--name=x'] into ['training.learning_rate=1e-4', 'name=x']."""
    overrides, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}: settings are given as --section.key value")
        if "=" in item:
            overrides.append(item[2:])
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            overrides.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise ConfigError(f"{item}: missing its value")
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    if args.method == "dpo":
        return cmd_train_dpo(args)
    if not args.config:
        raise ConfigError("train: give a training config (see configs/tidewater-train.yaml), or --method dpo")
    from assistant.config import load_train_config
    from assistant.train import TrainingInterrupted, train

    overrides = _dotted_overrides(args.extra) + ([f"name={json.dumps(args.name)}"] if args.name else [])
    config = load_train_config(args.config, overrides)
    try:
        folder = train(config, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    if folder is not None:  # None: another process of a multi-process run
        import yaml

        from assistant.card import loss_table

        print(f"adapter written to {folder}\n\nloss on answer tokens (lower is better):")
        print(loss_table(yaml.safe_load((folder / "card.yaml").read_text())))
    return 0


def cmd_train_dpo(args: argparse.Namespace) -> int:
    if args.config or args.extra:
        raise ConfigError("--method dpo takes its settings as options (--from, --pairs, --beta, ...), not a config "
                          f"file or dotted overrides (got {' '.join(filter(None, [args.config, *args.extra]))})")
    if not args.start_from or not args.pairs:
        raise ConfigError("--method dpo needs --from ADAPTER (the SFT adapter to start from) and --pairs FILE "
                          "(from `assistant feedback export`)")
    from assistant.dpo import DpoSettings, train_dpo

    settings = DpoSettings(start_from=args.start_from, pairs=args.pairs, name=args.name or "dpo",
                           output_dir=args.output_dir, beta=args.beta, epochs=args.epochs, max_steps=args.max_steps,
                           batch_size=args.batch_size, grad_accum=args.grad_accum,
                           learning_rate=args.learning_rate, seed=args.seed)
    folder = train_dpo(settings, overwrite=args.overwrite, quiet=args.quiet)
    print(f"adapter written to {folder}\n")
    print((folder / "README.md").read_text())
    return 0


def _feedback_store(args: argparse.Namespace):
    from assistant.feedback import FeedbackStore

    database = Path(args.data) / "feedback.db"
    if not database.is_file():
        raise ConfigError(f"{database}: no feedback database (the app writes one under --data)")
    return FeedbackStore(database)


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from assistant.feedback import preference_pairs

    pairs = list(preference_pairs(_feedback_store(args)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(staging, "w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
    os.replace(staging, out)
    sources = {}
    for pair in pairs:
        sources[pair["provenance"]["source"]] = sources.get(pair["provenance"]["source"], 0) + 1
    detail = ", ".join(f"{n} from {k}" for k, n in sorted(sources.items())) or "none"
    print(f"{len(pairs)} preference pairs ({detail}) written to {out}")
    return 0


def cmd_feedback_leaderboard(args: argparse.Namespace) -> int:
    from assistant.feedback import leaderboard

    store = _feedback_store(args)
    table = leaderboard(store.votes())
    print("| rank | variant | rating | 95% interval | votes | wins |\n|---:|---|---:|---|---:|---:|")
    for rank, s in enumerate(table, 1):
        print(f"| {rank} | {s.variant} | {s.rating:.0f} | {s.low:.0f} to {s.high:.0f} | {s.votes} | {s.wins} |")
    ratings = store.ratings()
    print(f"\n{len(store.votes())} votes, {len(ratings)} ratings "
          f"({sum(r['rating'] > 0 for r in ratings)} up, {sum(r['rating'] < 0 for r in ratings)} down)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from assistant.sweep import sweep

    folder = sweep(Path(args.config), _dotted_overrides(args.extra), args.search, args.trials, quiet=args.quiet)
    print(f"best adapter written to {folder}\n")
    print((folder / "sweep.md").read_text())
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from assistant.data import check_records, eval_questions, format_problems, read_jsonl, token_stats

    if args.config:
        return _check_with_config(args)
    if not args.files:
        raise ConfigError("data check: name JSONL files, or a training config with --config")
    problems: list[str] = []
    records = []
    for path in args.files:
        found, read_problems = read_jsonl(Path(path))
        records += found
        problems += read_problems
    leak = []
    for path in args.eval or []:
        leak += eval_questions(Path(path))
    from assistant.models import shared_tokenizer

    tokenizer = shared_tokenizer(args.base)[0]

    def count(record) -> int:
        messages = [m for m in record.messages if m["role"] in ("system", "user", "assistant")]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    problems += check_records(records, need_answer=True, count_tokens=count, max_tokens=args.max_tokens,
                              eval_questions=leak)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    stats = token_stats([count(r) for r in records])
    print(f"{len(records)} rows, no problems. Tokens per row (base tokenizer, chat template, no prompt "
          f"template): mean {stats['mean']:.0f}, median {stats['median']}, p95 {stats['p95']}, max {stats['max']}, "
          f"total {stats['total']}")
    return 0


def _check_with_config(args: argparse.Namespace) -> int:
    from assistant.config import load_train_config
    from assistant.train import estimate, measure_steps, prepare_data, serving_variant

    config = load_train_config(args.config, _dotted_overrides(args.extra))
    variant = serving_variant(config)
    try:
        data = prepare_data(config, variant)
    except DataError as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    tokens = data.stats["tokens"]
    print(f"no problems. Examples rendered with template {variant.prompt.template} as served:")
    for name in data.stats["examples"]:
        print(f"  {name}: {data.stats['examples'][name]} train, {data.stats['validation'][name]} validation, "
              f"{data.stats['mixture'][name]} per epoch in the mixture")
    print(f"tokens per example: mean {tokens['mean']:.0f}, median {tokens['median']}, p95 {tokens['p95']}, "
          f"max {tokens['max']}; answer tokens per epoch {data.stats['answer_tokens_per_epoch']} of "
          f"{data.stats['train_tokens_per_epoch']}")
    measured = None if args.no_measure else measure_steps(config, variant, data)
    plan = estimate(config, data, measured)
    print("pre-flight: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in plan.items()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from assistant.evaluation import default_cache, evaluate_suite, load_suite

    only = [n.strip() for n in args.variants.split(",")] if args.variants else []
    suite = load_suite(args.suite, only=only, limit=args.limit)
    if args.batch_size:
        suite.batch_size = args.batch_size
    print(f"suite {suite.name}: {len(suite.cases)} cases x {len(suite.variants)} variants "
          f"({', '.join(v.name for v in suite.variants)}); primary metric {suite.primary}", file=sys.stderr)
    if args.check:
        print("suite is valid", file=sys.stderr)
        return 0
    from assistant.report import winner_sentence, write_report

    result = evaluate_suite(suite, cache=None if args.no_cache else default_cache(), quiet=args.quiet,
                            refresh=args.refresh, engine=args.engine)
    folder = write_report(result, Path(args.out) if args.out else None)
    print(winner_sentence(result).replace("**", ""))
    print(f"report: {folder / 'report.md'}\n        {folder / 'report.html'}\nwinner: {folder / 'winner.yaml'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from assistant.serve.server import main as serve

    return serve(args.extra)


def cmd_export(args: argparse.Namespace) -> int:
    from assistant.export import ExportError, export

    source = Path(args.source)
    variant = load_variant(source / "variant.yaml" if source.is_dir() else source, args.overrides)
    out = Path(args.out) if args.out else (variant.resolve(variant.model.adapter).parent / "exports"
                                            / f"{variant.resolve(variant.model.adapter or '.').name}-{args.to}")
    try:
        folder = export(variant, args.to, out, args.base_type)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {folder}")
    for line in (folder / "export.yaml").read_text().splitlines():
        print(f"  {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant",
        description="Build a domain chat assistant: prompts with retrieval, adapters, evaluation, serving.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    chat = verbs.add_parser("chat", help="chat in the terminal, answers streamed token by token",
                            description="Chat in the terminal. Reads messages line by line from standard "
                            "input (typed or piped); /reset starts over, /quit ends.")
    _variant_options(chat)
    chat.add_argument("--no-sources", action="store_true", help="do not print the retrieved passages' sources")
    chat.set_defaults(run=cmd_chat)

    render = verbs.add_parser("render", help="print the exact messages, prompt text and token counts",
                              description="Print what the model would receive for a message: the messages the "
                              "template yields, the final prompt text after the chat template, and token counts.")
    _variant_options(render)
    render.add_argument("message", help="the user's message")
    render.add_argument("--history", metavar="FILE",
                        help="JSON list of earlier {role, content} messages that come before MESSAGE")
    render.set_defaults(run=cmd_render)

    info = verbs.add_parser("info", help="show the resolved base model, device, dtype, quantization and memory",
                            description="Load the variant's model and describe it.")
    _variant_options(info)
    info.set_defaults(run=cmd_info)

    variant = verbs.add_parser("variant", help="print every setting of a variant, documented, with its hash",
                               description="Print the resolved variant (defaults < file < --set) as YAML with "
                               "a comment on each setting: a starting point for your own variant file.")
    _variant_options(variant)
    variant.set_defaults(run=cmd_variant)

    train = verbs.add_parser(
        "train", help="train a LoRA adapter (QLoRA on a 4-bit base) from a training config",
        description="Train a LoRA adapter as the config says and write adapters/<name>/. Any setting can be "
        "overridden after the config: --training.learning_rate 1e-4 --lora.r 8 --name try2.")
    train.add_argument("config", nargs="?", help="training YAML file (see configs/tidewater-train.yaml); "
                       "not used with --method dpo")
    train.add_argument("--method", choices=["sft", "dpo"], default="sft",
                       help="sft: supervised fine-tuning from a config (default); dpo: preference tuning of an "
                       "SFT adapter from preference pairs (TRL's DPOTrainer)")
    train.add_argument("--name", help="adapter name (folder under the output folder)")
    dpo = train.add_argument_group("--method dpo")
    dpo.add_argument("--from", dest="start_from", metavar="ADAPTER",
                     help="SFT adapter folder to start from; its variant.yaml says how prompts are rendered")
    dpo.add_argument("--pairs", metavar="FILE", help="preference pairs JSONL from `assistant feedback export`")
    dpo.add_argument("--output-dir", default="adapters", help="where the adapter folder goes (default adapters)")
    dpo.add_argument("--beta", type=float, default=0.1,
                     help="pull towards the starting adapter: lower lets preferences move the model further (default 0.1)")
    dpo.add_argument("--epochs", type=float, default=1.0, help="passes over the pairs (default 1)")
    dpo.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    dpo.add_argument("--batch-size", type=int, default=2, help="pairs per forward pass (default 2)")
    dpo.add_argument("--grad-accum", type=int, default=1, help="forward passes per optimizer step (default 1)")
    dpo.add_argument("--learning-rate", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    dpo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run of the same name from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing adapter of the same name")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    sweep = verbs.add_parser(
        "sweep", help="search hyperparameters (grid or random) over the ranges in a training config",
        description="Train one adapter per trial over the config's `search` ranges (for example "
        "training.learning_rate: loguniform 1e-5 1e-3; lora.r: choice 4 8 16). Poor trials are pruned early "
        "on validation loss. The best adapter is kept as adapters/<name>/ with sweep.csv, sweep.md and "
        "sweep.png; the other trials are removed. Settings can be overridden as for train.")
    sweep.add_argument("config", help="training YAML file with a `search` section")
    sweep.add_argument("--search", choices=["grid", "random"], default="random",
                       help="grid: every combination of 'choice' ranges; random: sample every range (default)")
    sweep.add_argument("--trials", type=int, help="number of trials (random: required; grid: at most the grid size)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep.set_defaults(run=cmd_sweep)

    evaluation = verbs.add_parser(
        "eval", help="score prompt-only and tuned variants side by side on held-out cases; write a report and the winner",
        description="Every variant of the suite answers every case (batched; answers cached on disk by variant, "
        "case and weights, so a re-run only generates what changed). Metrics come from the evaluate modules in "
        "eval/metrics/, with 95%% bootstrap intervals and paired tests between variants. Writes "
        "eval/reports/<suite>-<time>/ with report.md, report.html, results.jsonl and winner.yaml, which the app "
        "serves by default. See eval/suites/*.yaml for the suite format.")
    evaluation.add_argument("suite", help="suite YAML file: cases, variants, metrics, primary/secondary metric")
    evaluation.add_argument("--variants", metavar="A,B", help="evaluate only these variants of the suite (names)")
    evaluation.add_argument("--limit", type=int, metavar="N", help="only the first N cases (a quick look)")
    evaluation.add_argument("--batch-size", type=int, metavar="N", help="cases generated together (default: the suite's)")
    evaluation.add_argument("--out", metavar="DIR", help="reports folder (default: the suite's, eval/reports)")
    evaluation.add_argument("--no-cache", action="store_true", help="generate every answer again and cache nothing")
    evaluation.add_argument("--refresh", action="store_true",
                            help="generate every answer again and replace the cached ones (e.g. to re-measure "
                            "cost on a quiet machine)")
    evaluation.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP + "; part of the answer cache's key")
    evaluation.add_argument("--check", action="store_true", help="only check the suite, its variants and cases; load no model")
    evaluation.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation.set_defaults(run=cmd_eval)

    serving = verbs.add_parser(
        "serve", add_help=False, help="the chat app, arena, leaderboard and OpenAI-compatible API on one server "
        "(the same as python app.py; `assistant serve --help` lists its options)")
    serving.set_defaults(run=cmd_serve)

    exporting = verbs.add_parser(
        "export", help="write an adapter as GGUF LoRA (llama.cpp, Ollama) or merged into its base (vLLM, TGI)",
        description="Export an adapter for other engines. 'gguf' writes adapter.gguf (F32 LoRA; the PEFT scale "
        "folded in, query/key rows in llama.cpp's order), plus base.gguf (unless serving.gguf names the "
        "base's file), a Modelfile for Ollama and export.yaml, whose hashes tie the files to "
        "the adapter's card. 'merged' writes the base with the adapter merged in, in full precision, as a "
        "Hugging Face folder.")
    exporting.add_argument("source", metavar="ADAPTER_OR_VARIANT",
                           help="adapter folder (its variant.yaml is used) or a variant file with model.adapter")
    exporting.add_argument("--to", choices=["gguf", "merged"], required=True, help="what to write")
    exporting.add_argument("--out", metavar="DIR",
                           help="folder to write, replaced atomically (default: exports/<adapter>-<to> beside the adapter)")
    exporting.add_argument("--base-type", choices=["q8_0", "f16", "f32"], default="q8_0",
                           help="weight type of base.gguf when one is written (default q8_0)")
    exporting.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="override a setting of the variant (repeatable)")
    exporting.set_defaults(run=cmd_export)

    feedback = verbs.add_parser("feedback", help="human feedback collected by the app: preference pairs, leaderboard",
                                description="Work with the app's feedback database (thumbs and arena votes).")
    feedback_verbs = feedback.add_subparsers(dest="feedback_verb", required=True, metavar="ACTION")
    export = feedback_verbs.add_parser(
        "export", help="write preference pairs (prompt, chosen, rejected, provenance) as JSONL for DPO",
        description="Pairs come from arena votes where one side won (ties and 'both bad' say nothing about "
        "which is better) and from thumbs: a liked and a disliked answer to the same conversation.")
    export.add_argument("--data", default="feedback", help="the app's --data folder (default feedback)")
    export.add_argument("--out", default="feedback/pairs.jsonl", help="output JSONL (default feedback/pairs.jsonl)")
    export.set_defaults(run=cmd_feedback_export)
    board = feedback_verbs.add_parser("leaderboard", help="Bradley-Terry ratings from the arena votes",
                                      description="Print the leaderboard the app shows, with vote counts.")
    board.add_argument("--data", default="feedback", help="the app's --data folder (default feedback)")
    board.set_defaults(run=cmd_feedback_leaderboard)

    data = verbs.add_parser("data", help="check training data", description="Check training data.")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    check = data_verbs.add_parser(
        "check", help="report every problem in JSONL training files, token statistics and a pre-flight estimate",
        description="Report every problem with file:line (invalid JSON, roles, order, empty or missing answers, "
        "over-length rows, exact and near duplicates, overlap with evaluation cases) and exit 1 if there is "
        "any. With --config, examples are rendered exactly as training renders them and a 2-step dry run "
        "measures speed and memory for the pre-flight estimate.")
    check.add_argument("files", nargs="*", help="JSONL files: chat messages, prompt/completion, or text/label rows")
    check.add_argument("--config", help="training YAML: check its tasks' files as the run would")
    check.add_argument("--eval", action="append", metavar="FILE",
                       help="evaluation cases; training rows that repeat one are reported as leakage (repeatable)")
    check.add_argument("--base", default="smollm2-135m-instruct", help="model whose tokenizer counts tokens")
    check.add_argument("--max-tokens", type=int, default=1024, help="longest allowed row in tokens (default 1024)")
    check.add_argument("--no-measure", action="store_true", help="with --config: skip the 2-step dry run")
    check.set_defaults(run=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.run not in (cmd_train, cmd_sweep, cmd_data_check, cmd_serve):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return args.run(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
