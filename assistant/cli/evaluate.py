"""The verbs that judge variants: ``eval`` (a suite scored side by side, a report and a winner), ``promote``
and ``gate`` (a report's winner against the served one or another report's) and ``feedback`` (the app's votes
as preference pairs or a leaderboard, and personal data scrubbed out of them). Each is a thin function over the
library; the parser that calls them is in ``parser.py``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assistant.settings_reader import ConfigError


def cmd_eval(args: argparse.Namespace) -> int:
    """Every variant of the suite answers every case (batched; answers cached on disk by variant, case and
    weights, so a re-run only generates what changed). Metrics come from the evaluate modules in
    eval/metrics/, with 95% bootstrap intervals and paired tests between variants. Writes
    eval/reports/<suite>-<time>/ with report.md, report.html, results.jsonl and winner.yaml, which the app
    serves by default. See eval/suites/*.yaml for the suite format.

    With --against REPORT|served the new winner is then compared with that report's winner (or the served
    one) as `assistant gate` does, and with --fail-on-regression a regression exits 1 with its reason on
    stderr, before any promotion."""
    from assistant.evaluation import default_cache, evaluate_suite, load_suite

    if args.fail_on_regression and not args.against:
        raise ConfigError("--fail-on-regression: say what to compare with, --against REPORT or --against served")
    if args.against and args.against != "served":
        from assistant.evaluation.regression import report_folder

        report_folder(args.against)  # a wrong baseline fails now, not after the suite has run
    only = [n.strip() for n in args.variants.split(",")] if args.variants else []
    suite = load_suite(args.suite, only=only, limit=args.limit)
    if args.batch_size:
        suite.batch_size = args.batch_size
    print(f"suite {suite.name}: {len(suite.cases)} cases x {len(suite.variants)} variants "
          f"({', '.join(v.name for v in suite.variants)}); primary metric {suite.primary}", file=sys.stderr)
    if args.check:
        print("suite is valid", file=sys.stderr)
        return 0
    from assistant.evaluation.report import winner_sentence, write_report

    swaps = None
    if args.probe == "counterfactual":
        from assistant.evaluation.probe import DEFAULT_LIST, load_swaps

        swaps = load_swaps(Path(args.probe_list) if args.probe_list else DEFAULT_LIST)
    result = evaluate_suite(suite, cache=None if args.no_cache else default_cache(), quiet=args.quiet,
                            refresh=args.refresh, engine=args.engine, probe=swaps)
    folder = write_report(result, Path(args.out) if args.out else None)
    print(winner_sentence(result).replace("**", ""))
    print(f"report: {folder / 'report.md'}\n        {folder / 'report.html'}\nwinner: {folder / 'winner.yaml'}")
    if args.against:
        from assistant.evaluation.regression import check_regression

        verdict = check_regression(folder, args.against, folder.parent, suite.promotion_margin)
        print(verdict.line, file=sys.stderr if verdict.regressed else sys.stdout)
        if verdict.regressed and args.fail_on_regression:
            return 1
    if suite.promote:
        from assistant.evaluation.promotion import promote

        decision = promote(folder, folder.parent, suite.promotion_margin)
        print(f"promotion: {'promoted' if decision.promoted else 'refused'}: {decision.reason}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make a report's winner the one the app serves, only if it beats the served variant on the suite's
    primary metric (paired bootstrap p < 0.05, on the same cases) and is not worse beyond --margin on the fact
    metrics; or the served one no longer exists. Otherwise say why and change nothing. --rollback serves the
    previously promoted winner again. Every promotion and rollback is kept in <reports>/promotions.jsonl."""
    from assistant.evaluation.promotion import promote, rollback, served_winner

    reports = Path(args.reports)
    if args.rollback:
        decision = rollback(reports, args.who)
    elif not args.report:
        current = served_winner(reports)
        print(f"served: {current[1].variant} from {current[1].report} ({current[1].reason})" if current
              else "nothing promoted yet")
        return 0
    else:
        decision = promote(Path(args.report), reports, args.margin, args.who)
    print(f"{'promoted' if decision.promoted else 'refused'}: {decision.reason}")
    return 0 if decision.promoted else 1


def cmd_gate(args: argparse.Namespace) -> int:
    """The regression gate for CI: compare the winner of REPORT with the winner of the --against report (or
    with the served variant) on the cases both scored, matched by case id. Exit 1, with a one-line reason on
    stderr, when it is significantly worse on the suite's primary metric (paired bootstrap, p < 0.05) or worse
    beyond --margin on a fact metric (key-fact recall, grounding, contradicted or unsupported facts per
    answer): the promotion gate's rule, read the other way. A tie or an improvement exits 0 and says so in one
    line. `assistant eval SUITE --against ... --fail-on-regression` runs the same check after the suite."""
    from assistant.evaluation.regression import check_regression

    verdict = check_regression(Path(args.report), args.against, Path(args.reports), args.margin)
    print(verdict.line, file=sys.stderr if verdict.regressed else sys.stdout)
    return 1 if verdict.regressed else 0


def _feedback_store(args: argparse.Namespace):
    from assistant.feedback import FeedbackStore

    database = Path(args.data) / "feedback.db"
    if not database.is_file():
        raise ConfigError(f"{database}: no feedback database (the app writes one under --data)")
    return FeedbackStore(database)


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from assistant.artifacts import write_jsonl
    from assistant.feedback import preference_pairs

    pairs = list(preference_pairs(_feedback_store(args)))
    out = write_jsonl(Path(args.out), pairs)
    sources = {}
    for pair in pairs:
        sources[pair["provenance"]["source"]] = sources.get(pair["provenance"]["source"], 0) + 1
    detail = ", ".join(f"{n} from {k}" for k, n in sorted(sources.items())) or "none"
    print(f"{len(pairs)} preference pairs ({detail}) written to {out}")
    return 0


def cmd_feedback_scrub(args: argparse.Namespace) -> int:
    """Replace personal data in the app's feedback database (every stored conversation, answer and comment)
    with typed placeholders: emails [EMAIL], phone numbers [PHONE], card numbers [CARD] (13 to 19 digits that
    pass the Luhn check) and the domain's own patterns ([LABEL], from --redact-pattern and --redact-patterns).
    The database is rewritten in place in one transaction (nothing half-written; the app may keep running)
    and rebuilt so that no old copy of the text is left in the file. Everything else in the text stays as it
    was. Exports made afterwards (feedback export) hold only the scrubbed text; files exported before are
    not touched."""
    from assistant.redaction import Redactor, documents_text, load_patterns

    redactor = Redactor(load_patterns(args.redact_pattern, args.redact_patterns))
    if args.keep_documents:
        redactor.published(documents_text(args.keep_documents))
    result = _feedback_store(args).scrub(redactor, dry_run=args.dry_run)
    kinds = ", ".join(f"{result.kinds[kind]} {kind}" for kind in redactor.kinds)
    print(f"{'would scrub' if args.dry_run else 'scrubbed'} {sum(result.rows.values())} of "
          f"{sum(result.total.values())} rows ({result.rows['ratings']} ratings, {result.rows['votes']} votes): "
          f"{kinds}")
    if not result.log_cleared:
        print("warning: another connection kept the write-ahead log (feedback.db-wal) from being emptied; old "
              "text may stay in it until the app stops: run the scrub again then", file=sys.stderr)
    return 0


def cmd_feedback_sample(args: argparse.Namespace) -> int:
    """Preference pairs without voters. The variant (usually the SFT adapter that DPO will start from)
    answers every assistant turn of --data --samples times, each time with another seed. Each answer is
    scored with the fact metrics: reference facts stated, minus those contradicted, minus facts that neither
    the prompt (instructions, retrieved passages, history) nor the reference supports. The best and the worst
    answer of a question become a pair; a question whose answers all score the same gives none. The pairs
    (with their scores in 'provenance') feed `assistant train --method dpo --pairs FILE`."""
    from assistant.artifacts import write_jsonl
    from assistant.training.preference import sample_pairs
    from assistant.variants import load_variant

    variant = load_variant(args.variant, args.overrides)
    if args.samples < 2:
        raise ConfigError("--samples: at least 2 answers per question are needed to make a pair")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="question", desc="sampling", file=sys.stderr)
        bar.update(done - bar.n)

    pairs, report = sample_pairs(variant, Path(args.data), args.samples, args.temperature, args.top_p, args.seed,
                                 args.limit, args.engine, progress)
    if bar is not None:
        bar.close()
    out = write_jsonl(Path(args.out), pairs)
    print(f"{report.questions} questions, {report.answers} answers: {report.pairs} pairs, {report.ties} questions "
          "whose answers the fact metrics could not separate")
    if pairs:
        chosen, rejected = (sum(s) / len(s) for s in (report.chosen_scores, report.rejected_scores))
        print(f"mean fact score: chosen {chosen:+.2f}, rejected {rejected:+.2f}")
    print(f"written to {out}")
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
